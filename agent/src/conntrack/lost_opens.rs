//! Connections whose open record was lost to a full ring buffer while the
//! kernel's socket map (`SOCKS`) holds them: `found.rs` claims only sockets
//! the map does not hold, so such a connection would never be followed. The
//! agent releases (deletes) the kernel's entry for it, and the kernel claims
//! the socket again at its next transfer, with a found record.
//!
//! Evidence that an entry's open record was lost:
//! - a data record for a socket the table does not know (neither open nor
//!   remembered closed): the ring buffer is one FIFO and a socket's open
//!   record is reserved before any transfer on it, so its open was lost
//!   ([`ConnTable::lost_open_at`], from the table's own step; the kernel's entry is released only if it is
//!   older than the data record, so a newer connection at a reused address,
//!   whose open is still queued, keeps its entry);
//! - on the lost-close sweep, an entry the table does not know that is older
//!   than [`MARGIN`] before the ring buffer was last read empty: its open
//!   record, if one was written, was read ([`ConnTable::lost_opens`]). This
//!   re-finds idle pooled connections before their next transfer, whose
//!   bytes would otherwise be untracked.
//!
//! Only while the table has room (a connection it would refuse again is not
//! released), at most once per socket per [`RELEASE_GAP`] for data records.

use std::time::{Duration, Instant};

use super::ConnTable;
#[cfg(test)]
use crate::capture::decode::Observation;

/// How much older than the last empty read of the ring buffer a kernel entry
/// must be for the sweep to release it.
pub const MARGIN_NS: u64 = 1_000_000_000;

/// A socket's kernel entry is looked up (and released) at most once per gap
/// on data records.
pub const RELEASE_GAP: Duration = Duration::from_secs(1);

/// Sockets whose entry was looked up on a data record, remembered at most.
pub const RECENT_MAX: usize = 4096;

/// Kernel entries examined per sweep at most (the map holds up to
/// `--max-sockets`).
pub const SCAN_MAX: usize = 65_536;

impl ConnTable {
    /// Whether the table can take one more open connection.
    pub fn has_room(&self) -> bool {
        self.tracked() < self.capacity
    }

    /// Whether the table holds the connection opened at `opened_ns` at `sk`.
    fn knows(&self, sk: u64, opened_ns: u64) -> bool {
        self.conns
            .get(&sk)
            .is_some_and(|c| c.opened_ns == opened_ns)
    }

    /// For a data record on a socket the table does not know, while it has
    /// room: the socket and the record's time. The caller releases the
    /// kernel's entry for it if that entry is not newer than the record.
    /// At most once per socket per [`RELEASE_GAP`].
    /// [`ConnTable::apply`] does this for every data record and puts what it
    /// finds in [`super::Finished::lost_opens`]; this form is for the tests.
    #[cfg(test)]
    pub fn lost_open(
        &mut self,
        obs: &Observation,
        now: impl Fn() -> Instant,
    ) -> Option<(u64, u64)> {
        let Observation::Data { sk, ts_ns, .. } = *obs else {
            return None;
        };
        if self.conns.contains_key(&sk) {
            return None;
        }
        self.lost_open_at(sk, ts_ns, now)
    }

    /// The lost-open check for a data record at `ts_ns` on `sk`, which
    /// the table does not know. `now` is read only when the table has room.
    pub(super) fn lost_open_at(
        &mut self,
        sk: u64,
        ts_ns: u64,
        now: impl Fn() -> Instant,
    ) -> Option<(u64, u64)> {
        if !self.has_room() {
            return None;
        }
        let now = now();
        if self
            .released
            .get(&sk)
            .is_some_and(|&at| now.saturating_duration_since(at) < RELEASE_GAP)
        {
            return None;
        }
        if self.released.len() >= RECENT_MAX {
            self.released
                .retain(|_, at| now.saturating_duration_since(*at) < RELEASE_GAP);
            if self.released.len() >= RECENT_MAX {
                return None;
            }
        }
        self.released.insert(sk, now);
        Some((sk, ts_ns))
    }

    /// Of the kernel's entries `(sk, opened_ns)`, those to release: not the
    /// table's, opened before `horizon_ns`, at most as many as the table has
    /// room for.
    pub fn lost_opens(
        &self,
        entries: impl IntoIterator<Item = (u64, u64)>,
        horizon_ns: u64,
    ) -> Vec<u64> {
        let room = self.capacity.saturating_sub(self.tracked());
        entries
            .into_iter()
            .filter(|&(sk, opened_ns)| opened_ns < horizon_ns && !self.knows(sk, opened_ns))
            .map(|(sk, _)| sk)
            .take(room)
            .collect()
    }
}
