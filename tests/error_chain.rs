//! The error chain names what happened on the connection: `source()` of a failed
//! request is hyper's error, and an I/O failure is that error's own source, whether
//! hyper had started the request or handed it back unsent. (hyper-util's legacy
//! client had the same gap: its PR #184.)
//!
//! Every client here sends each request once (`Policy::never()`), so no resend
//! replaces the error under test. The unsent cases use a plain listener that closes
//! each connection as it accepts it, and a connector that hands the connection to the
//! pool only once the close has reached the client's socket: hyper's first read then
//! fails while the request waits in its queue, unstarted, every time.

mod support;

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use tokio::net::{TcpListener, TcpStream};
use tower::Layer;

use closefirst::connect::TcpIo;
use closefirst::retry::Policy;
use closefirst::{Client, Error, Progress};
use support::{Fault, ServerConfig, TestServer};

/// Bounds every request: a hang is a failure, not a wait.
const PATIENCE: Duration = Duration::from_secs(10);

/// How the listener of [`closing_listener`] closes each connection it accepts.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// Orderly: the client reads EOF.
    Fin,
    /// Abortive (`SO_LINGER` 0): the client's next read fails with `ECONNRESET`.
    Rst,
}

/// A listener on `127.0.0.1:0` that closes every connection it accepts at once,
/// reading and writing nothing. Ends with the test's runtime.
async fn closing_listener(close: Close) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener on loopback");
    let addr = listener.local_addr().expect("a bound listener's address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if let Close::Rst = close {
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .expect("SO_LINGER on an accepted socket");
            }
            drop(stream);
        }
    });
    addr
}

/// A client that sends each request once, through a connector that connects to
/// `addr` and returns the connection only once it is readable: the server's FIN or
/// RST has arrived and the runtime knows it, so hyper's first read of the connection
/// sees it.
fn client_seeing_the_close_first(addr: SocketAddr) -> Client<Empty<Bytes>> {
    let connector = tower::service_fn(move |_: Uri| async move {
        let stream = TcpStream::connect(addr).await?;
        stream.readable().await?;
        Ok::<_, io::Error>(TcpIo::new(stream))
    });
    Client::builder()
        .retry(Policy::never())
        .learn_idle_timeout(false)
        .layer()
        .expect("valid settings")
        .layer(connector)
}

/// A client on the built-in connector that sends each request once.
fn client_sending_once() -> Client<Empty<Bytes>> {
    Client::builder()
        .retry(Policy::never())
        // A request sent once rides a reused connection only on evidence with
        // learning on; these tests are about the error on a reused one.
        .learn_idle_timeout(false)
        .build()
        .expect("valid settings")
}

async fn get(client: &Client<Empty<Bytes>>, url: &str, id: &str) -> Result<(), Error> {
    let req = Request::get(url)
        .header("x-request-id", id)
        .body(Empty::new())
        .expect("a valid request");
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("the request ends in time")?;
    resp.into_body()
        .collect()
        .await
        .expect("the warm-up body reads");
    Ok(())
}

/// A request on a connection the client has already used once, which the server
/// then ends with `fault` after reading the request.
async fn fails_on_a_reused_connection(fault: Fault) -> Error {
    let server = TestServer::start(ServerConfig {
        faults: [("doomed".to_owned(), fault)].into_iter().collect(),
        ..ServerConfig::default()
    });
    let client = client_sending_once();
    get(&client, &server.url("/"), "warm-up")
        .await
        .expect("the warm-up request succeeds");
    support::until(&client, |stats| stats.idle == 1).await;
    let err = get(&client, &server.url("/"), "doomed")
        .await
        .expect_err("the server answers nothing");
    assert_eq!(server.calls_for("doomed"), 1, "the server read the request");
    assert!(err.is_reused_connection(), "{err:?}");
    assert_eq!(
        err.request_progress(),
        Progress::WrittenNoResponse,
        "{err:?}"
    );
    err
}

/// The closefirst error's source, as a `hyper::Error`.
fn hyper_source(err: &Error) -> &hyper::Error {
    err.source()
        .and_then(|source| source.downcast_ref::<hyper::Error>())
        .unwrap_or_else(|| {
            panic!(
                "source() is not a hyper::Error: {:?} (the whole error: {err:?})",
                err.source()
            )
        })
}

/// The `io::Error` at most two levels down: the closefirst error's source is hyper's
/// error, whose source is the `io::Error`.
fn io_within_two_levels(err: &Error) -> &io::Error {
    let hyper = hyper_source(err);
    hyper
        .source()
        .and_then(|source| source.downcast_ref::<io::Error>())
        .unwrap_or_else(|| {
            panic!(
                "hyper's error {hyper:?} has no io::Error as its source (the whole error: {err:?})"
            )
        })
}

fn assert_incomplete_message(err: &Error) {
    let hyper = hyper_source(err);
    assert!(
        hyper.is_incomplete_message(),
        "expected hyper's IncompleteMessage as source(), got {hyper:?} (the whole error: {err:?})"
    );
}

#[tokio::test]
async fn a_fin_before_the_answer_is_an_incomplete_message_on_a_reused_connection() {
    let err = fails_on_a_reused_connection(Fault::FinWithoutAnswer).await;
    assert_incomplete_message(&err);
}

#[tokio::test]
async fn a_fin_before_an_unsent_request_is_an_incomplete_message() {
    let addr = closing_listener(Close::Fin).await;
    let client = client_seeing_the_close_first(addr);
    let err = get(&client, &format!("http://{addr}/"), "unsent")
        .await
        .expect_err("the server closed the connection");
    assert_eq!(
        err.request_progress(),
        Progress::NotWritten,
        "hyper handed the request back unsent: {err:?}"
    );
    assert_incomplete_message(&err);
    assert_eq!(
        err.to_string(),
        format!("GET http://{addr}: request failed before it was written on a new connection"),
        "Display prints one level"
    );
}

#[tokio::test]
async fn a_reset_before_the_answer_is_an_io_error_two_levels_down_on_a_reused_connection() {
    let err = fails_on_a_reused_connection(Fault::RstWithoutAnswer).await;
    let io = io_within_two_levels(&err);
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset, "{err:?}");
}

#[tokio::test]
async fn a_reset_before_an_unsent_request_is_an_io_error_two_levels_down() {
    let addr = closing_listener(Close::Rst).await;
    let client = client_seeing_the_close_first(addr);
    let err = get(&client, &format!("http://{addr}/"), "unsent")
        .await
        .expect_err("the server reset the connection");
    assert_eq!(
        err.request_progress(),
        Progress::NotWritten,
        "hyper handed the request back unsent: {err:?}"
    );
    let io = io_within_two_levels(&err);
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset, "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("GET http://{addr}: request failed before it was written on a new connection"),
        "Display prints one level"
    );
}
