//! `gatescope_trace_links_total{result}`: how each upstream call was tied
//! to its client request (see correlate/join.rs), counted once per call.

use prometheus::{IntCounter, Registry};

use super::families;
use crate::correlate::Link;

pub struct Links {
    /// Indexed like [`Link::ALL`]; every result is exported from the start.
    by_result: [IntCounter; Link::ALL.len()],
}

impl Links {
    pub fn new(registry: &Registry) -> Self {
        let family = families::TRACE_LINKS.counter(registry);
        Links {
            by_result: Link::ALL.map(|l| family.with_label_values(&[l.as_str()])),
        }
    }

    /// One upstream call settled with `link`.
    pub fn count(&self, link: Link) {
        let i = Link::ALL
            .iter()
            .position(|&l| l == link)
            .expect("every Link is in Link::ALL");
        self.by_result[i].inc();
    }
}
