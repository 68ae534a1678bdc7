//! Tests of one connection's bookkeeping, and the test connection other pool tests use.
use super::*;
use std::sync::Weak;

/// A connection for tests of the pool's bookkeeping: its peer is gone and its slot
/// belongs to no pool, so it is never used for a request.
pub(in crate::pool) async fn test_conn(
    expires: Option<Instant>,
) -> Conn<http_body_util::Empty<bytes::Bytes>> {
    let (io, _peer) = tokio::io::duplex(64);
    let (tx, _driver) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("an HTTP/1 handshake only sets up state, it does no IO");
    let origin = Arc::new(
        Origin::from_uri(&"http://example.test/".parse().expect("a valid URI"))
            .expect("an http URI with a host is an origin"),
    );
    let watch = Arc::new(IdleWaker::new(
        1,
        Arc::clone(&origin),
        Weak::new(),
        Weak::new(),
    ));
    Conn::new(tx, None, expires, None, watch, Slot::detached(origin))
}

/// Every idle connection holds one of each: their sizes are per-connection memory
/// (see `benches/memory.rs`). The origin in both is a pointer to the pool's copy.
#[test]
fn a_connections_slot_and_watch_stay_small() {
    let word = std::mem::size_of::<usize>();
    assert!(std::mem::size_of::<Slot<http_body_util::Empty<bytes::Bytes>>>() <= 3 * word);
    assert!(std::mem::size_of::<IdleWaker>() <= 8 * word);
    // An idle entry is a connection and its deadline: its idle period's start and its
    // id live in the connection (and its watch) once. 1,000 idle connections to one
    // origin are a list of 1,024 of these.
    assert!(
        std::mem::size_of::<crate::pool::idle::Idle<http_body_util::Empty<bytes::Bytes>>>()
            <= 24 * word
    );
}

#[tokio::test]
async fn a_huge_keep_alive_hint_is_capped() {
    let mut conn = test_conn(None).await;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::KEEP_ALIVE,
        "timeout=18446744073709551615".parse().unwrap(),
    );
    conn.observe_response(http::StatusCode::OK, &headers);
    assert_eq!(conn.hint_timeout, Some(MAX_KEEP_ALIVE_HINT));
    headers.insert(header::KEEP_ALIVE, "timeout=86399".parse().unwrap());
    conn.observe_response(http::StatusCode::OK, &headers);
    assert_eq!(conn.hint_timeout, Some(Duration::from_secs(86_399)));
    // A malformed hint leaves the last good one in place.
    headers.insert(
        header::KEEP_ALIVE,
        "timeout=99999999999999999999".parse().unwrap(),
    );
    conn.observe_response(http::StatusCode::OK, &headers);
    assert_eq!(conn.hint_timeout, Some(Duration::from_secs(86_399)));
}
