//! Tests of the error type: what it prints, what it says about a request, its source.
use super::*;

#[test]
fn error_is_send_sync_static() {
    fn assert_bounds<T: Send + Sync + 'static>() {}
    assert_bounds::<Error>();
}

#[test]
fn stale_connection_needs_a_reused_connection_and_no_response() {
    let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert!(Error::request(Progress::WrittenNoResponse, true, io()).is_stale_connection());
    assert!(Error::request(Progress::NotWritten, true, io()).is_stale_connection());
    assert!(!Error::request(Progress::WrittenNoResponse, false, io()).is_stale_connection());
    assert!(!Error::request(Progress::ResponseStarted, true, io()).is_stale_connection());
    assert!(!Error::config("x").is_stale_connection());
}

#[test]
fn display_prints_one_level_and_source_gives_the_cause() {
    let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    let error = Error::connect("http://127.0.0.1:1", cause);
    assert_eq!(error.to_string(), "failed to connect to http://127.0.0.1:1");
    assert!(error.is_connect());
    assert!(!error.is_timeout());
    assert_eq!(error.source().expect("source set").to_string(), "refused");
    assert_eq!(error.request_progress(), Progress::NotWritten);
}

/// A request hyper hands back because its connection is gone: hyper's `Canceled`
/// with a cause of its own (here a plain message) gives way to that cause.
#[tokio::test]
async fn source_skips_hypers_cancellation_to_its_cause() {
    let (client, _server) = tokio::io::duplex(64);
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(client))
    .await
    .expect("a handshake over an in-memory stream");
    drop(connection);
    let req = http::Request::new(http_body_util::Empty::new());
    let mut unsent = sender
        .try_send_request(req)
        .await
        .expect_err("no connection to send on");
    assert!(unsent.take_message().is_some(), "handed back unsent");
    let hyper = unsent.into_error();
    assert!(hyper.is_canceled(), "{hyper:?}");
    let error = Error::request(Progress::NotWritten, false, hyper);
    let source = error.source().expect("source set");
    assert!(
        source.downcast_ref::<hyper::Error>().is_none(),
        "{source:?}"
    );
    assert_eq!(source.to_string(), "connection was not ready");
    assert!(
        format!("{error:?}").contains("Canceled"),
        "Debug keeps hyper's error whole: {error:?}"
    );
}
