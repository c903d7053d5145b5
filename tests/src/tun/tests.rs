//! Unit tests of the parent module.

use super::*;

#[test]
fn checksums_verify_to_zero() {
    let p = build(
        Ipv4Addr::new(10, 1, 2, 2),
        Ipv4Addr::new(10, 1, 2, 1),
        7,
        40000,
        80,
        1,
        2,
        SYN,
        Some(1460),
        b"odd",
    );
    assert_eq!(checksum_fold(checksum_add(0, &p[..20])), 0);
    let mut sum = checksum_add(0, &p[12..20]);
    sum = checksum_add(sum, &[0, 6]);
    sum = checksum_add(sum, &((p.len() - 20) as u16).to_be_bytes());
    assert_eq!(checksum_fold(checksum_add(sum, &p[20..])), 0);
    let (sp, dp, len, seg) = parse(&p, Ipv4Addr::new(10, 1, 2, 1)).unwrap();
    assert_eq!(
        (sp, dp, len, seg.mss, &seg.payload[..]),
        (40000, 80, 47, Some(1460), &b"odd"[..])
    );
}
