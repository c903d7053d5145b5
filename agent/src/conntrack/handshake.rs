//! A TLS connection's handshake, reported once, and its bytes that go
//! unparsed when its process has no OpenSSL with probes.

use super::{
    facts::{tls_fact, unparsed_fact},
    Conn, Finished, TlsResult,
};
use crate::capture::decode::Direction;

/// A connection's TLS handshake, for its one [`super::Fact`] (see [`TlsResult`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handshake {
    /// Not TLS as far as its bytes show.
    Unknown,
    /// TLS, its first bytes seen, no plaintext yet; `alert`: a TLS alert in
    /// the clear was seen.
    Pending { alert: bool },
    /// Reported, or not to be (a connection open before gatescope started:
    /// its handshake was not seen).
    Done,
    /// TLS whose plaintext cannot be seen: its result cannot be told, and
    /// all its bytes, to the last read after its close, are unparsed.
    Blind,
}

impl Conn {
    /// After a transfer of `len` bytes in `dir` starting with `head`: a
    /// connection that turned out TLS has a handshake under way, and an
    /// alert in the clear before any plaintext fails it. `blind`: the
    /// process has no OpenSSL with probes (none mapped, or `--tls=false`),
    /// so the bytes are counted as unparsed and the handshake is not
    /// reported: with no plaintext, success and a client that leaves look
    /// alike. `open`: the connection is open (a handshake is watched only
    /// then).
    pub(super) fn watch_tls(
        &mut self,
        dir: Direction,
        head: &[u8],
        len: u64,
        blind: bool,
        open: bool,
        out: &mut Finished,
    ) {
        if self.handshake == Handshake::Blind || (blind && self.protocol.is_tls()) {
            self.handshake = Handshake::Blind;
            out.facts
                .push(unparsed_fact(self.role, &self.endpoints, dir, len));
            return;
        }
        if !self.protocol.is_tls() || !open {
            return;
        }
        if self.handshake == Handshake::Unknown {
            self.handshake = Handshake::Pending { alert: false };
        }
        if let Handshake::Pending { alert } = &mut self.handshake {
            // content type 21 (alert), version 3.x
            *alert |= matches!(head, [21, 3, 0..=4, ..]);
        }
    }

    /// The handshake's fact, once: plaintext flowed (`ok`), or the
    /// connection closed first (failed after an alert in the clear, else
    /// closed).
    pub(super) fn end_handshake(&mut self, ok: bool, out: &mut Finished) {
        match self.handshake {
            Handshake::Pending { alert } => {
                let result = match (ok, alert) {
                    (true, _) => TlsResult::Ok,
                    (false, true) => TlsResult::Failed,
                    (false, false) => TlsResult::Closed,
                };
                out.facts.push(tls_fact(self.role, &self.endpoints, result));
                self.handshake = Handshake::Done;
            }
            Handshake::Unknown => self.handshake = Handshake::Done,
            Handshake::Done | Handshake::Blind => {}
        }
    }
}
