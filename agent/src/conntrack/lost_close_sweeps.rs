//! The lost-close sweep schedule: when the connection table is compared with
//! the kernel's socket map ([`super::ConnTable::sweep`]) to recover from close
//! records lost to a full ring buffer.
//!
//! A sweep is due
//! - on every reconciliation for [`AFTER_LOSS`] after the last loss, so
//!   closes lost at any point of a burst are found once the burst is over;
//! - while the last sweep left suspects, because a suspect is only dropped
//!   when a second sweep confirms it;
//! - every [`PERIODIC`] regardless, a safety net for any close that was not
//!   seen (for example a socket freed and its address reused by a process we
//!   do not follow), at one map lookup per tracked connection.
//!
//! Sweeps are at least [`MIN_GAP`] apart whatever the caller's timer does (a
//! starved interval fires its missed ticks back to back): a close record
//! still queued at the first sweep must be read before the second one.

use std::time::{Duration, Instant};

pub const AFTER_LOSS: Duration = Duration::from_secs(5);
pub const PERIODIC: Duration = Duration::from_secs(30);
pub const MIN_GAP: Duration = Duration::from_millis(900);

#[derive(Debug)]
pub struct SweepSchedule {
    last_loss: Option<Instant>,
    last_sweep: Instant,
}

impl SweepSchedule {
    pub fn new(now: Instant) -> Self {
        SweepSchedule {
            last_loss: None,
            last_sweep: now,
        }
    }

    /// Records were lost at `now`.
    pub fn loss(&mut self, now: Instant) {
        self.last_loss = Some(now);
    }

    /// Whether to sweep at `now`, given whether the last sweep left
    /// suspects. A `true` answer counts as the sweep having run.
    pub fn due(&mut self, now: Instant, suspects: bool) -> bool {
        let since_sweep = now.saturating_duration_since(self.last_sweep);
        if since_sweep < MIN_GAP {
            return false;
        }
        let after_loss = self
            .last_loss
            .is_some_and(|at| now.saturating_duration_since(at) <= AFTER_LOSS);
        let due = after_loss || suspects || since_sweep >= PERIODIC;
        if due {
            self.last_sweep = now;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn quiet_host_sweeps_only_periodically() {
        let t0 = Instant::now();
        let mut s = SweepSchedule::new(t0);
        let due: Vec<u64> = (1..=61)
            .filter(|&i| s.due(t0 + secs(i as f64), false))
            .collect();
        assert_eq!(due, vec![30, 60]);
    }

    #[test]
    fn sweeps_every_tick_for_a_while_after_the_last_loss() {
        let t0 = Instant::now();
        let mut s = SweepSchedule::new(t0);
        // Losses during a 3 s burst, then quiet.
        for i in 0..3 {
            s.loss(t0 + secs(f64::from(i) + 0.5));
        }
        let due: Vec<u64> = (1..=12)
            .filter(|&i| s.due(t0 + secs(i as f64), false))
            .collect();
        assert_eq!(due, vec![1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn ticks_fired_back_to_back_sweep_once() {
        let t0 = Instant::now();
        let mut s = SweepSchedule::new(t0);
        s.loss(t0);
        let late = t0 + secs(3.0);
        assert!(s.due(late, false));
        assert!(!s.due(late + secs(0.001), false));
        assert!(!s.due(late + secs(0.002), true));
        assert!(s.due(late + secs(1.0), false));
    }

    #[test]
    fn suspects_keep_sweeps_going_until_confirmed() {
        let t0 = Instant::now();
        let mut s = SweepSchedule::new(t0);
        s.loss(t0);
        assert!(s.due(t0 + secs(10.0), true));
        assert!(s.due(t0 + secs(11.0), true));
        assert!(!s.due(t0 + secs(12.0), false));
    }
}
