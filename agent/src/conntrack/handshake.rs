//! A TLS connection's handshake, reported once, and its bytes that go
//! unparsed when its process has no OpenSSL with probes.

use super::{
    facts::{tls_fact, unparsed_fact, TlsVersion},
    Conn, Finished, TlsResult,
};
use crate::capture::decode::Direction;

/// A connection's TLS handshake, for its one [`super::Fact`] (see [`TlsResult`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handshake {
    /// Not TLS as far as its bytes show.
    Unknown,
    /// TLS, its first bytes seen, no plaintext yet; `alert`: a TLS alert in
    /// the clear was seen; `version`: from the ServerHello.
    Pending { alert: bool, version: TlsVersion },
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
    /// alert in the clear before any plaintext fails it. `blind`: a TLS
    /// connection whose process has no OpenSSL with probes (none mapped, or `--tls=false`),
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
        // `blind` holds only for a TLS connection (see the caller).
        if self.handshake == Handshake::Blind || blind {
            self.handshake = Handshake::Blind;
            out.facts.push(unparsed_fact(
                self.role,
                (&self.endpoints, self.netns),
                dir,
                len,
            ));
            return;
        }
        if !self.protocol.is_tls() || !open {
            return;
        }
        if self.handshake == Handshake::Unknown {
            self.handshake = Handshake::Pending {
                alert: false,
                version: TlsVersion::Unknown,
            };
        }
        if let Handshake::Pending { alert, version } = &mut self.handshake {
            // content type 21 (alert), version 3.x
            *alert |= matches!(head, [21, 3, 0..=4, ..]);
            if *version == TlsVersion::Unknown {
                *version = server_hello_version(head);
            }
        }
    }

    /// The handshake's fact, once: plaintext flowed (`ok`), or the
    /// connection closed first (failed after an alert in the clear, else
    /// closed).
    pub(super) fn end_handshake(&mut self, ok: bool, out: &mut Finished) {
        match self.handshake {
            Handshake::Pending { alert, version } => {
                let result = match (ok, alert) {
                    (true, _) => TlsResult::Ok,
                    (false, true) => TlsResult::Failed,
                    (false, false) => TlsResult::Closed,
                };
                out.facts.push(tls_fact(
                    self.role,
                    (&self.endpoints, self.netns),
                    result,
                    version,
                ));
                self.handshake = Handshake::Done;
            }
            Handshake::Unknown => self.handshake = Handshake::Done,
            Handshake::Done | Handshake::Blind => {}
        }
    }
}

/// The version a ServerHello at the start of `head` chose (RFC 8446 4.1.3):
/// TLS 1.3 says so in its `supported_versions` extension (43), older
/// versions in the legacy version field. The server's first flight starts
/// with it, within the first 128 bytes or so, well inside the usual
/// capture. [`TlsVersion::Unknown`] for anything else, or for a ServerHello
/// cut before its extensions end.
pub(super) fn server_hello_version(head: &[u8]) -> TlsVersion {
    // record: type 22 (handshake), version 3.x, length; handshake: type 2
    // (server_hello), length (3 bytes); then legacy_version, random (32).
    let (Some(&[22, 3, _, _, _, 2, _, _, _, major, minor]), Some(rest)) =
        (head.get(..11), head.get(11 + 32..))
    else {
        return TlsVersion::Unknown;
    };
    let legacy = match (major, minor) {
        (3, 1) => TlsVersion::Tls10,
        (3, 2) => TlsVersion::Tls11,
        (3, 3) => TlsVersion::Tls12,
        _ => return TlsVersion::Unknown,
    };
    let Some((&sid_len, rest)) = rest.split_first() else {
        return TlsVersion::Unknown;
    };
    // session id, cipher suite (2), compression method (1)
    let Some(rest) = rest.get(usize::from(sid_len) + 3..) else {
        return TlsVersion::Unknown;
    };
    // TLS 1.0 and 1.1 hellos may end here, with no extensions.
    let Some((ext_len, mut exts)) = rest.split_first_chunk::<2>() else {
        return if rest.is_empty() && legacy != TlsVersion::Tls12 {
            legacy
        } else {
            TlsVersion::Unknown
        };
    };
    let ext_len = usize::from(u16::from_be_bytes(*ext_len));
    if exts.len() < ext_len {
        // Cut before the extensions end: supported_versions may be later.
        return find_supported_version(exts).unwrap_or(TlsVersion::Unknown);
    }
    exts = &exts[..ext_len];
    find_supported_version(exts).unwrap_or(legacy)
}

/// The `supported_versions` extension in the extension list `exts`, if it is
/// there whole.
fn find_supported_version(mut exts: &[u8]) -> Option<TlsVersion> {
    while let Some((&[t0, t1, l0, l1], rest)) = exts.split_first_chunk::<4>() {
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let data = rest.get(..len)?;
        if u16::from_be_bytes([t0, t1]) == 43 {
            return match data {
                [3, 4] => Some(TlsVersion::Tls13),
                [3, 3] => Some(TlsVersion::Tls12),
                _ => Some(TlsVersion::Unknown),
            };
        }
        exts = &rest[len..];
    }
    None
}
