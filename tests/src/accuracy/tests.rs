//! Unit tests of the parent module.

use super::*;

const EDGES: [f64; 3] = [5.0, 10.0, 25.0];

/// A scrape of histogram `h_ms{service="s",route="r"}` holding `values`.
fn scrape(values: &[f64]) -> Scrape {
    let mut t = String::from("# TYPE h_ms histogram\n");
    for le in EDGES {
        let n = values.iter().filter(|v| **v <= le).count();
        let _ = writeln!(
            t,
            "h_ms_bucket{{service=\"s\",route=\"r\",le=\"{le}\"}} {n}"
        );
    }
    let n = values.len();
    let _ = writeln!(
        t,
        "h_ms_bucket{{service=\"s\",route=\"r\",le=\"+Inf\"}} {n}"
    );
    let _ = writeln!(
        t,
        "h_ms_sum{{service=\"s\",route=\"r\"}} {}",
        values.iter().sum::<f64>()
    );
    let _ = writeln!(t, "h_ms_count{{service=\"s\",route=\"r\"}} {n}");
    Scrape::parse(&t).unwrap()
}

fn run(log: &[f64], agent: &[f64], min_buckets: usize) -> Report {
    let want = BTreeMap::from([(
        "r".to_string(),
        log.iter()
            .map(|x| Timed {
                log_ms: *x,
                agent_ms: Some(*x),
            })
            .collect(),
    )]);
    let h = Histogram {
        family: "h_ms",
        service: "s",
        ms_per_unit: 1.0,
        resolution_ms: 1.0,
        min_buckets,
    };
    let mut r = Report::default();
    histogram_vs_log(&mut r, &h, &scrape(agent), &want);
    r
}

fn failed(r: &Report) -> Vec<&str> {
    r.checks
        .iter()
        .filter(|(_, (_, f))| !f.is_empty())
        .map(|(n, _)| n.as_str())
        .collect()
}

#[test]
fn histogram_comparison_tells_right_from_wrong() {
    // Mid-bucket values: an agent off by less than the resolution passes.
    let log: Vec<f64> = [1.0, 2.0, 7.0, 8.0, 17.0, 40.0, 60.0]
        .into_iter()
        .cycle()
        .take(70)
        .collect();
    let close: Vec<f64> = log.iter().map(|x| x + 0.6).collect();
    let r = run(&log, &close, 4);
    assert!(failed(&r).is_empty(), "{}", r.render());
    // 2 ms more each: the sum fails; 4 ms more: values cross edges.
    let plus2: Vec<f64> = log.iter().map(|x| x + 2.0).collect();
    assert_eq!(
        failed(&run(&log, &plus2, 4)),
        ["h_ms: _sum within n x 1 ms + 25 ms"]
    );
    let plus4: Vec<f64> = log.iter().map(|x| x + 4.0).collect();
    assert!(failed(&run(&log, &plus4, 4))
        .contains(&"h_ms: buckets exact but for requests within 1 ms of the edge"));
    // One request missing: the count fails (and its bucket).
    let f = failed(&run(&log, &log[1..], 4)).join(", ");
    assert!(f.contains("_count per route"), "{f}");
    // Too many requests on an edge, or too few buckets, decide nothing.
    let edgy: Vec<f64> = log
        .iter()
        .map(|x| if *x == 7.0 { 5.5 } else { *x })
        .collect();
    assert_eq!(
        failed(&run(&edgy, &edgy, 4)),
        ["h_ms: <= 10% of requests undecided at an edge"]
    );
    assert_eq!(failed(&run(&log, &log, 5)), ["h_ms: >= 5 buckets decided"]);
}
