//! JSON without buffering it: the top-level members of an object read as its
//! bytes arrive ([`TopLevel`]), and the last occurrence of a member found in a
//! window of bytes whose start is unknown ([`find_member`]).
//!
//! A prompt (or a completion) can be megabytes; only the few members asked
//! for are copied, each up to a bound, and string contents are skipped, not
//! kept.

/// Reads the members of a top-level JSON object incrementally and hands the
/// raw bytes of the wanted ones to a callback (each value as it is on the
/// wire: a string with its quotes, a number, an object with its braces).
#[derive(Debug)]
pub(crate) struct TopLevel {
    wanted: &'static [&'static [u8]],
    /// Longest raw value copied; a longer one is reported as overflowed.
    cap: usize,
    lex: Lex,
    /// Nesting: 1 inside the top-level object.
    depth: u32,
    /// At depth 1: what comes next.
    expect: Expect,
    /// The current top-level key (its first bytes; `key_len` counts all).
    key: [u8; KEY_MAX],
    key_len: usize,
    /// The value of a wanted member being copied: which one and its bytes
    /// (`None` once it overflowed `cap`).
    value: Option<(usize, Option<Vec<u8>>)>,
    /// The object ended, the bytes are not JSON, or a gap cut them: nothing
    /// more is reported.
    done: bool,
}

/// Keys longer than this are no wanted key: only their length is kept.
const KEY_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Between tokens.
    Normal,
    /// In a string; `esc` after a backslash.
    Str { esc: bool },
    /// In a number or a literal (`true`, `null`, ...).
    Lit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `{` of the top-level object.
    Open,
    Key,
    /// In a key (a string at depth 1).
    InKey,
    Colon,
    Value,
    /// After a value: `,` or `}`.
    Comma,
}

impl TopLevel {
    pub(crate) fn new(wanted: &'static [&'static [u8]], cap: usize) -> Self {
        Self {
            wanted,
            cap,
            lex: Lex::Normal,
            depth: 0,
            expect: Expect::Open,
            key: [0; KEY_MAX],
            key_len: 0,
            value: None,
            done: false,
        }
    }

    /// Whether it stopped (object ended, not JSON, or cut by a gap).
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the top-level object was read to its end.
    pub(crate) fn completed(&self) -> bool {
        self.done && self.depth == 0 && self.expect == Expect::Comma
    }

    /// Uncaptured bytes: where they end in the JSON is unknown.
    pub(crate) fn gap(&mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done = true;
        self.value = None;
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.value
            .as_ref()
            .and_then(|(_, v)| v.as_ref())
            .map_or(0, Vec::capacity)
    }

    /// Known bytes, contiguous with the ones before. `found(i, raw)` is
    /// called for each complete wanted member (`i` its index in `wanted`;
    /// `raw` `None` when its value was longer than the cap).
    pub(crate) fn feed(&mut self, b: &[u8], found: &mut impl FnMut(usize, Option<&[u8]>)) {
        let mut i = 0;
        while i < b.len() && !self.done {
            // string contents not kept are skipped in one go
            if let Lex::Str { esc: false } = self.lex {
                if !(self.depth == 1 && self.expect == Expect::InKey) {
                    let run = memchr::memchr2(b'"', b'\\', &b[i..]).unwrap_or(b.len() - i);
                    self.copy(&b[i..i + run]);
                    i += run;
                    if i == b.len() {
                        break;
                    }
                }
            }
            let c = b[i];
            i += 1;
            self.byte(c, found);
        }
    }

    /// Appends to the value being copied, if any.
    fn copy(&mut self, b: &[u8]) {
        let cap = self.cap;
        if let Some((_, slot)) = &mut self.value {
            match slot {
                Some(v) if v.len() + b.len() > cap => *slot = None,
                Some(v) => v.extend_from_slice(b),
                None => {}
            }
        }
    }

    fn end_value(&mut self, found: &mut impl FnMut(usize, Option<&[u8]>)) {
        if let Some((k, v)) = self.value.take() {
            found(k, v.as_deref());
        }
        self.expect = Expect::Comma;
    }

    fn byte(&mut self, c: u8, found: &mut impl FnMut(usize, Option<&[u8]>)) {
        match self.lex {
            Lex::Str { esc } => {
                if self.expect == Expect::InKey && self.depth == 1 {
                    if !esc && c == b'"' {
                        self.lex = Lex::Normal;
                        self.expect = Expect::Colon;
                        return;
                    }
                    if self.key_len < KEY_MAX {
                        self.key[self.key_len] = c;
                    }
                    self.key_len += 1;
                } else {
                    self.copy(&[c]);
                }
                self.lex = match (esc, c) {
                    (false, b'\\') => Lex::Str { esc: true },
                    (false, b'"') => {
                        if self.depth == 1 {
                            self.lex = Lex::Normal;
                            self.end_value(found);
                            return;
                        }
                        Lex::Normal
                    }
                    _ => Lex::Str { esc: false },
                };
                return;
            }
            Lex::Lit => {
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.') {
                    self.copy(&[c]);
                    return;
                }
                self.lex = Lex::Normal;
                if self.depth == 1 {
                    self.end_value(found);
                }
            }
            Lex::Normal => {}
        }
        if c.is_ascii_whitespace() {
            return;
        }
        if self.depth > 1 {
            self.copy(&[c]);
            match c {
                b'"' => self.lex = Lex::Str { esc: false },
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 1 {
                        self.end_value(found);
                    }
                }
                _ => {}
            }
            return;
        }
        match (self.expect, c) {
            (Expect::Open, b'{') => {
                self.depth = 1;
                self.expect = Expect::Key;
            }
            (Expect::Key, b'"') => {
                self.lex = Lex::Str { esc: false };
                self.expect = Expect::InKey;
                self.key_len = 0;
            }
            (Expect::Key | Expect::Comma, b'}') => {
                self.depth = 0;
                self.expect = Expect::Comma;
                self.stop();
            }
            (Expect::Colon, b':') => {
                self.expect = Expect::Value;
                let key = &self.key[..self.key_len.min(KEY_MAX)];
                self.value = (self.key_len <= KEY_MAX)
                    .then(|| self.wanted.iter().position(|w| *w == key))
                    .flatten()
                    .map(|k| (k, Some(Vec::new())));
            }
            (Expect::Value, _) => {
                self.copy(&[c]);
                match c {
                    b'"' => self.lex = Lex::Str { esc: false },
                    b'{' | b'[' => self.depth = 2,
                    b'-' | b'0'..=b'9' | b'a'..=b'z' => self.lex = Lex::Lit,
                    _ => self.stop(),
                }
            }
            (Expect::Comma, b',') => self.expect = Expect::Key,
            _ => self.stop(),
        }
    }
}

/// What [`find_member`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Member<'a> {
    /// The raw value, complete.
    Value(&'a [u8]),
    /// The key, its value running past the window's end.
    Cut,
}

/// The last member `"key": value` in bytes that may start anywhere in a JSON
/// text (after a gap). A `"key":` there is always a key: inside a string
/// every quote is escaped. Which object it belongs to is not known.
pub(crate) fn find_member<'a>(w: &'a [u8], key: &[u8]) -> Option<Member<'a>> {
    let mut end = w.len();
    while let Some(at) = rfind_key(&w[..end], key) {
        end = at;
        let mut i = at + key.len() + 2;
        while w.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if w.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while w.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let start = i;
        return Some(match value_end(w, start) {
            Some(e) => Member::Value(&w[start..e]),
            None => Member::Cut,
        });
    }
    None
}

/// Where `"key"` last starts in `w`, not preceded by a backslash.
fn rfind_key(w: &[u8], key: &[u8]) -> Option<usize> {
    let n = key.len() + 2;
    (0..=w.len().checked_sub(n)?).rev().find(|&p| {
        w[p] == b'"'
            && w[p + n - 1] == b'"'
            && &w[p + 1..p + n - 1] == key
            && (p == 0 || w[p - 1] != b'\\')
    })
}

/// The end of the JSON value starting at `w[start]`, if it is in `w`.
fn value_end(w: &[u8], start: usize) -> Option<usize> {
    match *w.get(start)? {
        b'"' => string_end(w, start + 1),
        b'{' | b'[' => {
            let mut depth = 0u32;
            let mut i = start;
            while i < w.len() {
                match w[i] {
                    b'"' => {
                        i = string_end(w, i + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let n = w[start..]
                .iter()
                .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')))?;
            Some(start + n)
        }
    }
}

/// Just past the quote that closes a string whose contents start at `i`.
fn string_end(w: &[u8], mut i: usize) -> Option<usize> {
    while i < w.len() {
        match w[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANTED: &[&[u8]] = &[b"model", b"stream", b"usage"];

    fn members(chunks: &[&[u8]], cap: usize) -> (Vec<(usize, Option<String>)>, bool) {
        let mut t = TopLevel::new(WANTED, cap);
        let mut got = Vec::new();
        for c in chunks {
            t.feed(c, &mut |k, v| {
                got.push((k, v.map(|v| String::from_utf8_lossy(v).into_owned())));
            });
        }
        (got, t.completed())
    }

    #[test]
    fn top_level_members_only() {
        let body = br#" {"messages":[{"role":"user","content":"say \"model\": \"x\" {"}],
            "model" : "gpt-4o-mini", "n":1, "stream":true,
            "usage":{"a":[1,{"b":"}"}]},"tail":null}"#;
        let want = vec![
            (0, Some(r#""gpt-4o-mini""#.to_owned())),
            (1, Some("true".to_owned())),
            (2, Some(r#"{"a":[1,{"b":"}"}]}"#.to_owned())),
        ];
        assert_eq!(members(&[body], 1024), (want.clone(), true));
        // byte by byte: the same
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(members(&bytes, 1024), (want, true));
        // over the cap
        let (got, _) = members(&[body], 6);
        assert_eq!(got, vec![(0, None), (1, Some("true".into())), (2, None)]);
    }

    #[test]
    fn not_an_object_or_cut() {
        assert_eq!(members(&[b"[1,2]"], 64), (vec![], false));
        assert_eq!(members(&[br#"{"model" "x"}"#], 64), (vec![], false));
        let mut t = TopLevel::new(WANTED, 64);
        let mut n = 0;
        t.feed(br#"{"messages":"long"#, &mut |_, _| n += 1);
        t.gap();
        t.feed(br#"","model":"m"}"#, &mut |_, _| n += 1);
        assert_eq!(n, 0);
        assert!(t.is_done() && !t.completed());
        // a number ended by the closing brace
        assert_eq!(
            members(&[br#"{"stream":1}"#], 64),
            (vec![(1, Some("1".into()))], true)
        );
    }

    #[test]
    fn members_in_a_window() {
        let w = br#"ens":3},"x":"\"usage\": no","usage":{"prompt_tokens":5,"s":"}"},"end":1}"#;
        assert_eq!(
            find_member(w, b"usage"),
            Some(Member::Value(br#"{"prompt_tokens":5,"s":"}"}"#))
        );
        assert_eq!(
            find_member(br#"ab","usage": {"p":1"#, b"usage"),
            Some(Member::Cut)
        );
        assert_eq!(
            find_member(br#"x,"eval_count": 42}"#, b"eval_count"),
            Some(Member::Value(b"42"))
        );
        assert_eq!(find_member(br#""usage"x"#, b"usage"), None);
        assert_eq!(
            find_member(br#","model":"m-1","#, b"model"),
            Some(Member::Value(br#""m-1""#))
        );
    }
}
