//! How far a failed request got, from what crossed its socket: the one place that
//! turns byte counts into a [`Progress`].
//!
//! Take a [`Mark`] of the connection's socket just before the request is handed to
//! hyper; after a failure, [`progress`] compares it with a fresh one. Any byte that
//! reached hyper means the response started (invariant 4: "response started" means
//! bytes reached hyper; under TLS that is plaintext, counted by
//! [`Wrapped`](super::Wrapped), not the socket's bytes, of which a `close_notify` alert
//! is some); otherwise any byte written means written with no response ("written" is
//! conservative: any byte on the wire); otherwise nothing was written. A connection
//! with no socket handle cannot be told apart, so it counts as the worst case.

use super::socket::SocketHandle;
use crate::error::Progress;

/// A socket's byte counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    read: u64,
    written: u64,
}

impl Mark {
    /// The counters of a connection that has carried nothing yet: with it, a fresh
    /// connection's whole history is measured.
    pub(crate) const ZERO: Mark = Mark {
        read: 0,
        written: 0,
    };

    /// How far a request got that started at `self` and stands at `now`.
    pub(crate) fn progress_to(self, now: Mark) -> Progress {
        if now.read > self.read {
            Progress::ResponseStarted
        } else if now.written > self.written {
            Progress::WrittenNoResponse
        } else {
            Progress::NotWritten
        }
    }
}

impl SocketHandle {
    /// The byte counters now.
    pub(crate) fn mark(&self) -> Mark {
        // Read first: a response byte counted before the write counter is loaded
        // can only make the answer more conservative, never less. "Read" is what
        // reached hyper (plaintext under TLS); "written" is any byte on the wire.
        let read = self.bytes_delivered();
        let written = self.bytes_written();
        Mark { read, written }
    }
}

/// How far a request got between two marks of its connection's socket; without
/// either (a connector whose IO gives no socket handle) nobody can tell, so the
/// request counts as [`ResponseStarted`](Progress::ResponseStarted) and is never
/// resent.
pub(crate) fn progress(before: Option<Mark>, now: Option<Mark>) -> Progress {
    match (before, now) {
        (Some(before), Some(now)) => before.progress_to(now),
        _ => Progress::ResponseStarted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(read: u64, written: u64) -> Option<Mark> {
        Some(Mark { read, written })
    }

    #[test]
    fn byte_counts_classify_how_far_the_request_got() {
        let cases = [
            // (before, now, expected)
            (mark(0, 0), mark(0, 0), Progress::NotWritten),
            (mark(10, 20), mark(10, 20), Progress::NotWritten),
            (mark(10, 20), mark(10, 21), Progress::WrittenNoResponse),
            (mark(0, 0), mark(0, u64::MAX), Progress::WrittenNoResponse),
            (mark(10, 20), mark(11, 20), Progress::ResponseStarted),
            (mark(10, 20), mark(11, 99), Progress::ResponseStarted),
            (
                mark(u64::MAX - 1, 0),
                mark(u64::MAX, 0),
                Progress::ResponseStarted,
            ),
            // Counters never go back; if they seemed to, nothing new crossed.
            (mark(10, 20), mark(9, 19), Progress::NotWritten),
            // No socket handle: nobody can tell, assume the worst.
            (None, None, Progress::ResponseStarted),
            (mark(0, 0), None, Progress::ResponseStarted),
            (None, mark(0, 0), Progress::ResponseStarted),
        ];
        for (before, now, expected) in cases {
            assert_eq!(progress(before, now), expected, "{before:?} -> {now:?}");
        }
    }

    #[test]
    fn zero_measures_a_fresh_connection_from_its_start() {
        assert_eq!(Mark::ZERO.progress_to(Mark::ZERO), Progress::NotWritten);
        assert_eq!(
            Mark::ZERO.progress_to(Mark {
                read: 0,
                written: 1
            }),
            Progress::WrittenNoResponse
        );
        assert_eq!(
            Mark::ZERO.progress_to(Mark {
                read: 1,
                written: 0
            }),
            Progress::ResponseStarted
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_mark_follows_the_socket_counters() {
        use hyper::rt::Write;
        use std::future::poll_fn;
        use std::pin::Pin;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut io = crate::io::TcpIo::new(client.unwrap());
        let _server = accepted.unwrap().0;
        let handle = io.handle();

        let before = handle.mark();
        assert_eq!(before, Mark::ZERO);
        let n = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"GET / HTTP/1.1\r\n\r\n"))
            .await
            .unwrap();
        assert!(n > 0);
        assert_eq!(
            handle.mark(),
            Mark {
                read: 0,
                written: n as u64
            }
        );
        assert_eq!(
            progress(Some(before), Some(handle.mark())),
            Progress::WrittenNoResponse
        );
    }
}
