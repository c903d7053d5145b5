//! Server-sent events (`text/event-stream`, the WHATWG grammar): lines ending
//! in LF, CRLF or CR; `data:` lines joined with LF; an empty line dispatches
//! the event. Only `data` is kept: every API here repeats the event's type
//! in its data, so an `event:` line lost in a gap costs nothing.

use super::buf::EventBuf;

/// Longest field name looked at (`data` is 4 bytes).
const FIELD_MAX: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Sse {
    line: Line,
    /// Field name so far (its first bytes) and its length.
    field: [u8; FIELD_MAX],
    field_len: usize,
    /// The current line is a `data` field whose value is being kept.
    in_data: bool,
    /// The event has a `data` line already (the next one is joined with LF).
    has_data: bool,
    data: EventBuf,
    /// A CR ended the last line: a LF right after it belongs to it.
    after_cr: bool,
    /// After a gap: the event in progress is dropped at its end.
    cut: bool,
    /// Events dropped because a gap cut them.
    pub dropped: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Line {
    #[default]
    Start,
    Field,
    /// After `:`, before an optional space.
    ValueStart,
    Value,
}

impl Sse {
    /// Known bytes; `event(data)` for each complete event.
    pub(crate) fn feed(&mut self, mut b: &[u8], event: &mut impl FnMut(&EventBuf)) {
        while let Some((&c, rest)) = b.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if c == b'\n' {
                    b = rest;
                    continue;
                }
            }
            if self.line == Line::Value && c != b'\r' && c != b'\n' {
                // the value up to the line end in one go
                let n = memchr::memchr2(b'\r', b'\n', b).unwrap_or(b.len());
                if self.in_data {
                    self.data.push(&b[..n]);
                }
                b = &b[n..];
                continue;
            }
            b = rest;
            if c == b'\r' || c == b'\n' {
                self.after_cr = c == b'\r';
                self.end_line(event);
                continue;
            }
            match self.line {
                Line::Start | Line::Field => {
                    if c == b':' {
                        self.start_value();
                        self.line = Line::ValueStart;
                    } else {
                        if self.field_len < FIELD_MAX {
                            self.field[self.field_len] = c;
                        }
                        self.field_len += 1;
                        self.line = Line::Field;
                    }
                }
                Line::ValueStart => {
                    self.line = Line::Value;
                    if c != b' ' && self.in_data {
                        self.data.push(&[c]);
                    }
                }
                Line::Value => {}
            }
        }
    }

    /// A value starts: a `data` value is joined to the event's.
    fn start_value(&mut self) {
        self.in_data =
            self.field_len > 0 && &self.field[..self.field_len.min(FIELD_MAX)] == b"data";
        if self.in_data {
            if self.has_data {
                self.data.push(b"\n");
            }
            self.has_data = true;
        }
    }

    fn end_line(&mut self, event: &mut impl FnMut(&EventBuf)) {
        match self.line {
            Line::Start => {
                // an empty line: the event ends
                if self.cut {
                    self.dropped += 1;
                } else if self.has_data {
                    event(&self.data);
                }
                self.cut = false;
                self.has_data = false;
                self.data.clear();
            }
            // a field with no colon: its value is empty
            Line::Field => self.start_value(),
            Line::ValueStart | Line::Value => {}
        }
        self.line = Line::Start;
        self.field_len = 0;
        self.in_data = false;
    }

    /// Uncaptured bytes: the event in progress is cut, and the bytes after
    /// the gap may start mid-line (their first line is not believed).
    pub(crate) fn gap(&mut self) {
        self.cut = true;
        self.line = Line::Value;
        self.in_data = false;
        self.after_cr = false;
    }

    /// The body ended: an event not ended by an empty line is dropped.
    pub(crate) fn end(&mut self) {
        if self.has_data || self.cut || self.line != Line::Start {
            self.dropped += 1;
        }
        self.data.clear();
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.data.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(parts: &[Option<&[u8]>]) -> (Vec<String>, u32) {
        let mut s = Sse::default();
        let mut got = Vec::new();
        for p in parts {
            match p {
                Some(b) => s.feed(b, &mut |e| {
                    got.push(String::from_utf8_lossy(e.whole().unwrap()).into_owned());
                }),
                None => s.gap(),
            }
        }
        s.end();
        (got, s.dropped)
    }

    #[test]
    fn events_and_line_endings() {
        let body = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\n\
                     data:{\"b\":2}\r\n\r\ndata: x\rdata: y\r\rdata: [DONE]\n\n";
        let want = vec![
            "{\"a\":1}".to_owned(),
            "{\"b\":2}".to_owned(),
            "x\ny".to_owned(),
            "[DONE]".to_owned(),
        ];
        assert_eq!(events(&[Some(body)]), (want.clone(), 0));
        let bytes: Vec<Option<&[u8]>> = body.chunks(1).map(Some).collect();
        assert_eq!(events(&bytes), (want, 0));
    }

    #[test]
    fn gaps_drop_the_events_they_cut() {
        let (got, dropped) = events(&[
            Some(b"data: {\"a\":1}\n\ndata: {\"b\""),
            None,
            Some(b"tail of b\"}\n\ndata: {\"c\":3}\n\ndata: {\"d\""),
        ]);
        assert_eq!(got, vec!["{\"a\":1}".to_owned(), "{\"c\":3}".to_owned()]);
        // b cut by the gap, d by the end
        assert_eq!(dropped, 2);
        // a gap at an event boundary: the next event's first line is not believed
        let (got, dropped) = events(&[Some(b"data: 1\n\n"), None, Some(b"data: 2\n\ndata: 3\n\n")]);
        assert_eq!((got, dropped), (vec!["1".to_owned(), "3".to_owned()], 1));
    }
}
