//! Fuzz-style tests of `H2Conn` with a seeded generator: the recorded
//! conversation cut into random transfers must give the same exchanges;
//! captured sparsely or corrupted, it must never name a stream wrongly,
//! panic or grow without bound.

use super::*;
use crate::testkit::cap;

/// xorshift64*, as `crate::fuzz`'s.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Heap a connection may hold: two HPACK tables at their cap, a few
/// streams.
const HEAP_BOUND: usize = 2 * (super::super::hpack::CAP + 4096 * 64) + 64 * 1024;

#[test]
fn random_splits_give_the_same_exchanges() {
    let conv = recorded();
    for run in 0..300 {
        let mut rng = Rng::new(run);
        let mut t = Conn::new(Side::Server);
        for (i, (is_req, b)) in conv.iter().enumerate() {
            let ts = 100 + i as u64;
            let mut at = 0;
            while at < b.len() {
                let n = 1 + rng.below((b.len() - at).min(64));
                t.feed(*is_req, &full(ts, &b[at..at + n]));
                at += n;
            }
        }
        assert_eq!(t.anomalies(), [], "run {run}");
        assert_eq!(t.exchanges(), recorded_exchanges(), "run {run}");
    }
}

#[test]
fn sparse_capture_never_names_a_stream_wrongly() {
    let conv = recorded();
    let truth: Vec<(String, String, u16)> = recorded_exchanges()
        .into_iter()
        .map(|e| (e.method, e.path, e.status))
        .collect();
    for run in 0..500 {
        let mut rng = Rng::new(1000 + run);
        let mut t = if run % 3 == 0 {
            Conn::midstream(Side::Server)
        } else {
            Conn::new(Side::Server)
        };
        for (i, (is_req, b)) in conv.iter().enumerate() {
            if run % 3 == 0 && i < rng.below(conv.len()) {
                continue;
            }
            let ts = 100 + i as u64;
            let head = rng.below(b.len() + 1);
            let tail = rng.below(b.len() - head + 1);
            t.feed(*is_req, &cap(ts, b, head, tail));
            assert!(t.c.heap_bytes() <= HEAP_BOUND, "run {run}");
        }
        t.c.on_close(1_000, &mut t.out);
        for e in t.exchanges() {
            if !e.path.is_empty() && !e.method.is_empty() {
                assert!(
                    truth.iter().any(|(m, p, _)| *m == e.method && *p == e.path),
                    "run {run}: {e:#?}"
                );
            }
            assert!(
                e.request_bytes <= 145 && e.response_bytes <= 1033,
                "run {run}: {e:#?}"
            );
        }
    }
}

#[test]
fn corrupted_and_random_bytes_do_not_panic() {
    let conv = recorded();
    for run in 0..500 {
        let mut rng = Rng::new(5000 + run);
        let mut t = Conn::new(if run % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        });
        for (i, (is_req, b)) in conv.iter().enumerate() {
            let mut b = b.clone();
            for _ in 0..rng.below(4) {
                let at = rng.below(b.len());
                b[at] = rng.next() as u8;
            }
            if run % 5 == 0 {
                b = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
            }
            t.feed(*is_req, &full(100 + i as u64, &b));
            assert!(t.c.heap_bytes() <= HEAP_BOUND, "run {run}");
        }
        t.c.on_close(1_000, &mut t.out);
    }
}
