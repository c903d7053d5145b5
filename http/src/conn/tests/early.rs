//! A response read before its request's record arrives (conn/early.rs).

use super::*;

/// Caddy's transport writes on one thread and reads on another: the read of
/// the answer can be logged before the write of the request.
#[test]
fn an_answer_logged_before_its_request_is_paired_with_it() {
    let mut t = Conn::new(Side::Client);
    let q1 = curl_get("/first");
    let r1 = nginx_resp(200, "text/plain", b"one");
    let q2 = curl_get("/second");
    let r2 = nginx_resp(404, "text/plain", b"two!");
    t.req(full(1_000, &q1)).resp(full(2_000, &r1));
    // The second request's record comes 50 us after its answer was read.
    t.resp(full(3_000, &r2[..20]))
        .resp(full(3_100, &r2[20..]))
        .req(full(53_000, &q2));
    t.close(90_000);
    assert_eq!(
        t.exchanges(),
        vec![
            ex(
                "GET",
                "/first",
                200,
                q1.len(),
                r1.len(),
                (1_000, 1_000),
                (2_000, 2_000)
            ),
            // sent no later than its answer came
            ex(
                "GET",
                "/second",
                404,
                q2.len(),
                r2.len(),
                (3_000, 3_000),
                (3_000, 3_100)
            ),
        ]
    );
    assert_eq!(t.anomalies(), vec![]);
}

/// A server's answer with no request long before the next request is not
/// that request's: both are handled as they were without the hold.
#[test]
fn an_answer_long_before_the_next_request_is_not_its() {
    let mut with_hold = Conn::new(Side::Client);
    let q = curl_get("/later");
    let r = nginx_resp(408, "text/plain", b"timeout");
    with_hold
        .resp(full(1_000, &r))
        .req(full(1_000 + 200_000_000, &q))
        .close(1_000 + 300_000_000);
    let ex = with_hold.exchanges();
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!((ex[0].path.as_str(), ex[0].status), ("/later", 0));
}

/// The gateway's own side of a client connection needs no hold: it reads a
/// request before it can answer it, and the read's record is made in the
/// read.
#[test]
fn downstream_responses_are_not_held() {
    let mut t = Conn::new(Side::Server);
    let r = nginx_resp(200, "text/plain", b"x");
    t.resp(full(1_000, &r));
    assert!(t.c.early.is_empty());
}

/// Held bytes are bounded: past the bound they are fed as they come.
#[test]
fn held_bytes_are_bounded() {
    let mut t = Conn::new(Side::Client);
    let head = nginx_head(200, "text/plain", 1 << 20);
    t.resp(full(1_000, &head));
    assert!(!t.c.early.is_empty());
    let body = vec![b'a'; 40 * 1024];
    t.resp(full(1_100, &body)).resp(full(1_200, &body));
    assert!(t.c.early.is_empty());
    assert!(t.c.heap_bytes() < 100 * 1024, "{}", t.c.heap_bytes());
}
