//! Tests of the benchmark's summary: round lines, tables and the BENCHMARKS.md splice.

use super::*;

#[test]
fn splices_between_the_markers() {
    let block = format!("{BEGIN}\nnew\n{END}\n");
    let old = format!("# B\n\nintro\n{BEGIN}\nold\n{END}\n\n## Notes\nkept\n");
    assert_eq!(
        splice(&old, &block),
        format!("# B\n\nintro\n{BEGIN}\nnew\n{END}\n\n## Notes\nkept\n")
    );
    assert_eq!(
        splice("# B\nno markers", &block),
        format!("# B\nno markers\n\n{block}")
    );
}

#[test]
fn formats_numbers() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(21345), "21,345");
    assert_eq!(thousands(1234567), "1,234,567");
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
    assert_eq!(t, "| a   | bb  |\n| --- | --- |\n| xyz | 1   |\n");
}
