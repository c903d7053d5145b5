//! Newline-delimited JSON (`application/x-ndjson`, Ollama's streams): one
//! object per line.

use super::buf::EventBuf;

#[derive(Debug, Default)]
pub(crate) struct Ndjson {
    line: EventBuf,
    /// After a gap: the bytes up to the next line end are the rest of a cut
    /// line.
    skip: bool,
    /// Lines dropped because a gap (or the body's end) cut them.
    pub dropped: u32,
}

impl Ndjson {
    /// Known bytes; `line(bytes)` for each complete non-empty line.
    pub(crate) fn feed(&mut self, mut b: &[u8], line: &mut impl FnMut(&EventBuf)) {
        while !b.is_empty() {
            let Some(n) = memchr::memchr(b'\n', b) else {
                if !self.skip {
                    self.line.push(b);
                }
                return;
            };
            if self.skip {
                self.skip = false;
            } else {
                self.line.push(&b[..n]);
                if self.line.last().iter().any(|c| !c.is_ascii_whitespace()) {
                    line(&self.line);
                }
            }
            self.line.clear();
            b = &b[n + 1..];
        }
    }

    pub(crate) fn gap(&mut self) {
        if !self.skip {
            self.dropped += 1;
        }
        self.skip = true;
        self.line.clear();
    }

    /// The body ended: a line without its LF is still a line (Ollama ends
    /// every line with one; a server that does not loses nothing).
    pub(crate) fn end(&mut self, line: &mut impl FnMut(&EventBuf)) {
        if !self.skip && self.line.last().iter().any(|c| !c.is_ascii_whitespace()) {
            line(&self.line);
        }
        self.line.clear();
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.line.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_cut() {
        let mut n = Ndjson::default();
        let mut got = Vec::new();
        let mut f =
            |e: &EventBuf| got.push(String::from_utf8_lossy(e.whole().unwrap()).into_owned());
        n.feed(b"{\"a\":1}\n{\"b\"", &mut f);
        n.feed(b":2}\n\n{\"c\"", &mut f);
        n.gap();
        n.feed(b"3}\n{\"d\":4}", &mut f);
        n.end(&mut f);
        assert_eq!(got, vec!["{\"a\":1}", "{\"b\":2}", "{\"d\":4}"]);
        assert_eq!(n.dropped, 1);
    }
}
