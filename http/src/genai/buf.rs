//! Bounded copies of body bytes: one event (or line) of a stream, and the
//! last bytes of a body seen after a gap.

/// Longest event (SSE) or line (NDJSON) kept whole; a longer one keeps only
/// its last [`WINDOW`] bytes, where its usage is.
pub(crate) const MAX_EVENT: usize = 64 * 1024;
/// The bytes kept at the end of a body (or of an oversized event): usage
/// objects sit at the end and are well under 1 KiB.
pub(crate) const WINDOW: usize = 8 * 1024;
/// Capacity an event buffer may keep between events: most events are a few
/// hundred bytes, so a rare big one does not pin 64 KiB for the rest of the
/// stream.
const KEEP: usize = 4 * 1024;

/// The last up to [`WINDOW`] known bytes, contiguous.
#[derive(Debug, Default)]
pub(crate) struct Window {
    buf: Vec<u8>,
}

impl Window {
    pub(crate) fn push(&mut self, b: &[u8]) {
        if b.len() >= WINDOW {
            self.buf.clear();
            self.buf.extend_from_slice(&b[b.len() - WINDOW..]);
            return;
        }
        let over = (self.buf.len() + b.len()).saturating_sub(WINDOW);
        self.buf.drain(..over);
        self.buf.extend_from_slice(b);
    }

    /// Uncaptured bytes: what was kept is not contiguous with what follows.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

/// One event's bytes: whole up to [`MAX_EVENT`], else its last [`WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct EventBuf {
    buf: Vec<u8>,
    /// Past [`MAX_EVENT`]: `tail` holds the last bytes, `buf` is empty.
    tail: Option<Window>,
}

impl EventBuf {
    pub(crate) fn push(&mut self, b: &[u8]) {
        if let Some(w) = &mut self.tail {
            w.push(b);
        } else if self.buf.len() + b.len() <= MAX_EVENT {
            self.buf.extend_from_slice(b);
        } else {
            let mut w = Window::default();
            w.push(&self.buf);
            w.push(b);
            self.buf = Vec::new();
            self.tail = Some(w);
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.tail.is_none()
    }

    /// The whole event, or `None` when it overflowed.
    pub(crate) fn whole(&self) -> Option<&[u8]> {
        self.tail.is_none().then_some(&self.buf[..])
    }

    /// The event's last bytes (all of it when it did not overflow).
    pub(crate) fn last(&self) -> &[u8] {
        self.tail.as_ref().map_or(&self.buf[..], Window::bytes)
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP {
            self.buf.shrink_to(KEEP);
        }
        self.tail = None;
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity() + self.tail.as_ref().map_or(0, Window::heap_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_last_bytes() {
        let mut w = Window::default();
        w.push(b"abc");
        w.push(&[b'x'; WINDOW - 1]);
        assert_eq!(w.bytes().len(), WINDOW);
        assert_eq!(&w.bytes()[..2], b"cx");
        w.push(&vec![b'y'; 3 * WINDOW]);
        assert!(w.bytes().len() == WINDOW && w.bytes().iter().all(|&c| c == b'y'));
        assert!(w.heap_bytes() <= 4 * WINDOW);
    }

    #[test]
    fn events_overflow_to_their_end() {
        let mut e = EventBuf::default();
        e.push(b"{\"a\":");
        assert_eq!(e.whole(), Some(&b"{\"a\":"[..]));
        for _ in 0..100 {
            e.push(&[b'1'; 1000]);
        }
        e.push(b"}");
        assert_eq!(e.whole(), None);
        assert_eq!(e.last().len(), WINDOW);
        assert!(e.last().ends_with(b"1}"));
        e.clear();
        assert!(e.is_empty() && e.heap_bytes() <= MAX_EVENT);
    }
}
