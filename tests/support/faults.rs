//! Shared pieces of the fault tests (`tests/faults*.rs`): request kinds, a request
//! body that can fail, bounded calls, and the file-descriptor check.
//!
//! Every scenario runs through [`isolated`]: alone among the tests of its binary
//! (they share one fd table), on a runtime of its own, and it fails if the process
//! has more open fds once the scenario's client and server are dropped than before.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use closefirst::{Client, ConnectionInfo, Error};

use crate::support::TestServer;

/// Upper bound for one call (request and body): generous, so that only a hang fails.
pub const CALL_LIMIT: Duration = Duration::from_secs(10);
/// Upper bound for anything that should happen "promptly" in the background.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Serialises the scenarios of one test binary: they count the process's fds.
static FD_LOCK: Mutex<()> = Mutex::new(());

/// Entries in `/proc/self/fd` (the directory handle itself included, the same way
/// every time).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// What each open fd points to, for a failure message.
fn fd_listing() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("{} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect()
}

/// The runtime a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub enum Flavor {
    /// Two worker threads.
    Multi,
    /// One thread: a `std::thread::sleep` in the test blocks every client task.
    Current,
}

/// Runs `scenario` alone among this binary's tests, on a fresh runtime, and asserts
/// that the process's open fds are back to their count from before it once it has
/// returned (having dropped its clients and servers). Fds close asynchronously (a
/// connection task notices its client is gone), so the check polls for a while.
pub fn isolated<F, Fut>(flavor: Flavor, scenario: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let _alone = FD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = match flavor {
        Flavor::Multi => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        Flavor::Current => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("test runtime");
    runtime.block_on(async {
        let before = open_fds();
        scenario().await;
        let deadline = Instant::now() + PATIENCE;
        while open_fds() > before {
            assert!(
                Instant::now() < deadline,
                "fd leak: {} open, {before} before the scenario:\n{}",
                open_fds(),
                fd_listing().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Polls `what` (on tokio's clock) until it holds; panics naming `waiting_for` when it
/// has not after [`PATIENCE`].
pub async fn eventually(waiting_for: &str, what: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !what() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {waiting_for}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The three ways each scenario sends its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `GET`: idempotent, resent when the policy allows.
    Get,
    /// `POST`: never resent once written.
    Post,
    /// `POST` with `Idempotency-Key: k`: resent like an idempotent method.
    PostKeyed,
    /// `PUT` (idempotent, and it carries a body).
    Put,
}

/// GET, POST, and POST with an `Idempotency-Key`.
pub const KINDS: [Kind; 3] = [Kind::Get, Kind::Post, Kind::PostKeyed];

impl Kind {
    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            Kind::Get => Method::GET,
            Kind::Post | Kind::PostKeyed => Method::POST,
            Kind::Put => Method::PUT,
        }
    }

    /// Whether the default policy may resend a request written on a reused connection.
    pub fn resendable(self) -> bool {
        !matches!(self, Kind::Post)
    }
}

/// How long [`TestBody::fails_after_first_bytes`] waits between its bytes and its
/// error, so that hyper writes the bytes first (as when a file read or a downstream
/// upload fails part-way).
pub const BODY_FAILS_AFTER: Duration = Duration::from_millis(20);

/// A request body: whole bytes, or one that fails the way a file stream or an aborted
/// upload does. Like those streams, a failed body ends (`None`) if polled again.
#[derive(Debug)]
pub enum TestBody {
    /// These bytes, then the end (`None` once yielded).
    Full(Option<Bytes>),
    /// `ab`, then (after [`BODY_FAILS_AFTER`]) an I/O error, then the end. No size
    /// hint: sent chunked.
    FailsAfterFirstBytes(FailingBody),
    /// An I/O error on the first poll, then the end. No size hint: sent chunked.
    FailsAtOnce(FailingBody),
}

/// The state of a failing [`TestBody`].
#[derive(Debug, Default)]
pub struct FailingBody {
    step: u8,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TestBody {
    /// A complete body.
    pub fn bytes(bytes: impl Into<Bytes>) -> TestBody {
        TestBody::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> TestBody {
        TestBody::Full(None)
    }

    /// `ab`, then an error.
    pub fn fails_after_first_bytes() -> TestBody {
        TestBody::FailsAfterFirstBytes(FailingBody::default())
    }

    /// An error at once.
    pub fn fails_at_once() -> TestBody {
        TestBody::FailsAtOnce(FailingBody::default())
    }
}

fn body_failure() -> io::Error {
    io::Error::other("the test body failed on purpose")
}

impl http_body::Body for TestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            TestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            TestBody::FailsAtOnce(state) => match state.step {
                0 => {
                    state.step = 1;
                    Poll::Ready(Some(Err(body_failure())))
                }
                _ => Poll::Ready(None),
            },
            TestBody::FailsAfterFirstBytes(state) => match state.step {
                0 => {
                    state.step = 1;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"ab")))))
                }
                1 => {
                    let pause = state
                        .pause
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(BODY_FAILS_AFTER)));
                    std::task::ready!(pause.as_mut().poll(cx));
                    state.step = 2;
                    Poll::Ready(Some(Err(body_failure())))
                }
                _ => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, TestBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            _ => SizeHint::default(),
        }
    }
}

/// The client every scenario uses unless it says otherwise: all defaults, so the
/// retry policy is `Policy::idempotent()` (2 attempts).
///
/// Learning is off: the scenarios are about what happens on a reused connection, which
/// with learning on a POST without a key rides only on evidence of the server's timer
/// (issue 19; `tests/idle_timer.rs` covers that).
pub fn default_client() -> Client<TestBody> {
    Client::builder()
        .learn_idle_timeout(false)
        .build()
        .expect("the default settings are valid")
}

/// A request of `kind` to `server` with `x-request-id: id` and `body`.
pub fn request(server: &TestServer, kind: Kind, id: &str, body: TestBody) -> Request<TestBody> {
    let mut builder = Request::builder()
        .method(kind.method())
        .uri(server.url("/"))
        .header("x-request-id", id);
    if kind == Kind::PostKeyed {
        builder = builder.header("idempotency-key", "k");
    }
    builder.body(body).expect("the request parts are valid")
}

/// A request of `kind` with a small body (none for GET).
pub fn simple(server: &TestServer, kind: Kind, id: &str) -> Request<TestBody> {
    let body = match kind {
        Kind::Get => TestBody::empty(),
        _ => TestBody::bytes("payload"),
    };
    request(server, kind, id, body)
}

/// What the caller saw of a response that arrived.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The pool's facts about the connection.
    pub info: ConnectionInfo,
    /// The body, or the error that ended it.
    pub body: Result<Bytes, hyper::Error>,
}

/// Sends `req` and reads the whole body, all within [`CALL_LIMIT`].
pub async fn call(client: &Client<TestBody>, req: Request<TestBody>) -> Result<Answer, Error> {
    let what = format!("{} {}", req.method(), req.uri());
    tokio::time::timeout(CALL_LIMIT, async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let info = resp
            .extensions()
            .get::<ConnectionInfo>()
            .cloned()
            .expect("every response carries ConnectionInfo");
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|collected| collected.to_bytes());
        Ok(Answer { status, info, body })
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish within {CALL_LIMIT:?}"))
}

/// Sends a warm-up GET and waits until its connection is idle in the pool, so that
/// the next request reuses it.
pub async fn warm(client: &Client<TestBody>, server: &TestServer) {
    let answer = call(client, simple(server, Kind::Get, "warm-up"))
        .await
        .expect("the warm-up request succeeds");
    assert_eq!(answer.status, StatusCode::OK);
    answer.body.expect("the warm-up body is complete");
    eventually("the warm-up connection to go idle", || {
        client.stats().idle == 1
    })
    .await;
}

/// `http://127.0.0.1:PORT`, as an error names the origin.
pub fn origin(server: &TestServer) -> String {
    format!("http://{}", server.addr())
}
