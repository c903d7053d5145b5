//! Response bytes that arrive before the request they answer, on an upstream
//! connection (the gateway is the client).
//!
//! The send tracepoint (`sock:sock_send_length`) fires at the end of the
//! send syscall, after the kernel has handed the bytes to the peer. On
//! loopback the peer runs, answers and can be read before the sending thread
//! reaches the tracepoint: a gateway that writes and reads one connection
//! from different threads (Go: Caddy's transport has a write loop and a read
//! loop) can then log the response's read before the request's write. CI saw
//! it once per run of Caddy on the fallback payload path (one call of 45 left
//! unanswered). nginx, HAProxy and Envoy write and read a connection on one
//! thread, so the order is theirs. Such a response is held here, copied, until
//! the request's record comes, and fed after it.

use crate::Segment;

/// Captured bytes held per connection at most; past it the held response is
/// fed as it is (unanswerable, as before the hold). The window is a thread's
/// few microseconds between handing bytes over and the tracepoint, so one
/// head (up to 32 KiB captured) is all it ever has to hold.
const MAX_HELD: usize = 64 * 1024;

/// One held segment, owned.
#[derive(Debug)]
struct Held {
    ts_ns: u64,
    len: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Segments held, oldest first.
#[derive(Debug, Default)]
pub(super) struct Early {
    held: Vec<Held>,
    bytes: usize,
}

impl Early {
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The first held segment's time: the request was sent before it.
    pub(super) fn first_ts(&self) -> Option<u64> {
        self.held.first().map(|h| h.ts_ns)
    }

    /// Holds `seg` if there is room; false (nothing held) otherwise.
    pub(super) fn hold(&mut self, seg: &Segment<'_>) -> bool {
        let n = seg.head.len() + seg.tail.len();
        if self.bytes + n > MAX_HELD {
            return false;
        }
        self.bytes += n;
        self.held.push(Held {
            ts_ns: seg.ts_ns,
            len: seg.len,
            head: seg.head.to_vec(),
            tail: seg.tail.to_vec(),
        });
        true
    }

    /// Hands every held segment to `feed`, oldest first, and forgets them.
    pub(super) fn release(&mut self, mut feed: impl FnMut(&Segment<'_>)) {
        self.bytes = 0;
        for h in std::mem::take(&mut self.held) {
            feed(&Segment {
                ts_ns: h.ts_ns,
                len: h.len,
                head: &h.head,
                tail: &h.tail,
            });
        }
    }

    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes + self.held.capacity() * size_of::<Held>()
    }
}
