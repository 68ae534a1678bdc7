//! [`ReplayBody`]: a request body that can be sent again.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::error::BoxError;

/// A request body that keeps what it sends, up to a cap, so the request can be sent
/// again after a failure.
///
/// Every copy made with [`try_clone`](ReplayBody::try_clone) shares one recording: the
/// first attempt reads the wrapped body and records each chunk (a `Bytes` chunk is
/// recorded without copying); a later attempt replays the recording and, if the first
/// attempt stopped early, goes on reading the wrapped body from where it stopped. Once
/// more than the cap has been read, recording stops and the body can no longer be
/// replayed. A body that is empty from the start records nothing.
///
/// If the wrapped body yields an error, the body can never be replayed: every copy
/// fails from then on. Replaying what was recorded and ending there would send a
/// truncated body that the server would take as complete.
pub struct ReplayBody<B> {
    /// `None` for a body that was empty from the start: nothing to share or record.
    shared: Option<Arc<Mutex<Shared<B>>>>,
    /// Index of the next recorded chunk this copy yields, or [`DONE`] once it has
    /// yielded its trailers or its end.
    ///
    /// Two words in all: hyper's request queue keeps 32 requests' worth of slots per
    /// connection, so every byte here costs 32 for each pooled connection.
    position: usize,
}

/// [`ReplayBody::position`] of a copy that has yielded everything.
const DONE: usize = usize::MAX;

struct Shared<B> {
    inner: Option<Pin<Box<B>>>,
    recorded: VecDeque<Bytes>,
    recorded_bytes: usize,
    trailers: Option<HeaderMap>,
    /// The wrapped body's size hint, which every copy reports.
    size_hint: SizeHint,
    /// The wrapped body has ended; the recording (if not overflowed) is complete.
    ended: bool,
    /// More than the cap was read: the recording is incomplete for good.
    overflowed: bool,
    /// The wrapped body yielded an error: there is no whole body to send, ever.
    failed: bool,
    cap: usize,
}

impl<B: HttpBody> ReplayBody<B> {
    /// Wraps `body`, keeping up to `cap` bytes of it for replay.
    pub fn new(body: B, cap: usize) -> Self {
        let size_hint = body.size_hint();
        let empty = body.is_end_stream();
        let shared = (!empty).then(|| {
            Arc::new(Mutex::new(Shared {
                inner: Some(Box::pin(body)),
                recorded: VecDeque::new(),
                recorded_bytes: 0,
                trailers: None,
                size_hint,
                ended: false,
                overflowed: false,
                failed: false,
                cap,
            }))
        });
        ReplayBody {
            shared,
            position: 0,
        }
    }
}

impl<B: HttpBody> ReplayBody<B> {
    /// Wraps `body` without keeping anything: it is sent once and cannot be replayed.
    pub(crate) fn passthrough(body: B) -> Self {
        let body = ReplayBody::new(body, 0);
        if let Some(shared) = &body.shared {
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .overflowed = true;
        }
        body
    }
}

impl<B> ReplayBody<B> {
    /// A copy that sends the body again from its start, or `None` when that is no
    /// longer possible (more than the cap was read).
    pub fn try_clone(&self) -> Option<Self> {
        if !self.is_replayable() {
            return None;
        }
        Some(ReplayBody {
            shared: self.shared.clone(),
            position: 0,
        })
    }

    /// Whether [`try_clone`](ReplayBody::try_clone) would succeed: false once more than
    /// the cap was read, or once the wrapped body has failed.
    pub fn is_replayable(&self) -> bool {
        self.shared.as_ref().map_or(true, |shared| {
            let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
            !shared.overflowed && !shared.failed
        })
    }

    /// A copy that yields nothing and reads nothing, kept to ask
    /// [`has_failed`](ReplayBody::has_failed) after the body was handed to hyper.
    pub(crate) fn observer(&self) -> Self {
        ReplayBody {
            shared: self.shared.clone(),
            position: DONE,
        }
    }

    /// Whether the wrapped body yielded an error (on any copy).
    pub fn has_failed(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.lock().unwrap_or_else(PoisonError::into_inner).failed)
    }
}

impl<B> HttpBody for ReplayBody<B>
where
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(shared) = this.shared.as_ref().filter(|_| this.position != DONE) else {
            return Poll::Ready(None);
        };
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.failed {
            this.position = DONE;
            return Poll::Ready(Some(Err(BodyFailedEarlier.into())));
        }
        if let Some(chunk) = shared.recorded.get(this.position) {
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if shared.ended {
            this.position = DONE;
            return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let Some(inner) = shared.inner.as_mut() else {
            return Poll::Ready(Some(Err("request body is no longer available".into())));
        };
        match inner.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.ended = true;
                shared.inner = None;
                this.position = DONE;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // No copy may ever send this body again, not even the part recorded.
                shared.failed = true;
                shared.inner = None;
                shared.recorded.clear();
                this.position = DONE;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    if !shared.overflowed {
                        if shared.recorded_bytes + chunk.len() <= shared.cap {
                            shared.recorded_bytes += chunk.len();
                            shared.recorded.push_back(chunk.clone());
                            this.position += 1;
                        } else {
                            shared.overflowed = true;
                            shared.recorded.clear();
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        shared.trailers = Some(trailers.clone());
                        shared.ended = true;
                        shared.inner = None;
                        this.position = DONE;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // Neither data nor trailers: a frame kind this crate does not know.
                    Err(_) => Poll::Ready(Some(Err("unsupported request body frame".into()))),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared.is_none() || self.position == DONE
    }

    fn size_hint(&self) -> SizeHint {
        match &self.shared {
            Some(shared) => {
                shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .size_hint
            }
            None => SizeHint::with_exact(0),
        }
    }
}

/// What a copy of a [`ReplayBody`] yields once the wrapped body has failed.
#[derive(Debug)]
struct BodyFailedEarlier;

impl fmt::Display for BodyFailedEarlier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body failed on an earlier attempt and cannot be sent again")
    }
}

impl std::error::Error for BodyFailedEarlier {}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("position", &self.position)
            .field("replayable", &self.is_replayable())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    async fn collect<B>(body: ReplayBody<B>) -> Bytes
    where
        B: HttpBody,
        B::Error: Into<BoxError>,
    {
        body.collect().await.expect("body reads").to_bytes()
    }

    #[tokio::test]
    async fn full_body_replays_and_keeps_its_exact_size() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 64);
        let again = body.try_clone().expect("nothing read yet");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(collect(body).await, "hello");
        assert_eq!(again.size_hint().exact(), Some(5));
        let third = again.try_clone().unwrap();
        assert_eq!(collect(again).await, "hello");
        assert_eq!(collect(third).await, "hello");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_cannot_be_replayed() {
        let body = ReplayBody::new(Full::new(Bytes::from(vec![7u8; 100])), 64);
        assert!(body.is_replayable());
        let copy = body.try_clone().unwrap();
        assert_eq!(collect(body).await.len(), 100);
        assert!(!copy.is_replayable());
        assert!(copy.try_clone().is_none());
    }

    /// A body that yields the given frames, one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn a_partly_sent_body_continues_from_the_wrapped_body() {
        let frames = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::trailers(HeaderMap::new()),
        ]));
        let mut first = ReplayBody::new(frames, 64);
        let second = first.try_clone().unwrap();
        // The first attempt reads one chunk and fails.
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        drop(first);
        // The second sends it all: the recorded chunk, then the rest, then trailers.
        let collected = second.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert_eq!(collected.to_bytes(), "abcd");
    }

    /// A body that yields `ab`, then an I/O error, then (if polled again) ends, as
    /// `tokio_util::io::ReaderStream` does after a failed read.
    struct FailsAfter(Option<Bytes>, bool);

    impl HttpBody for FailsAfter {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if let Some(chunk) = self.0.take() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if !self.1 {
                self.1 = true;
                return Poll::Ready(Some(Err(std::io::Error::other("read failed"))));
            }
            Poll::Ready(None)
        }
    }

    #[tokio::test]
    async fn a_body_that_failed_is_never_replayed_not_even_in_part() {
        let mut first = ReplayBody::new(FailsAfter(Some(Bytes::from_static(b"ab")), false), 64);
        let spare = first.try_clone().expect("nothing read yet");
        assert_eq!(
            first.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ab"
        );
        let error = first.frame().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "read failed");
        assert!(first.frame().await.is_none(), "the failed copy ends");
        drop(first);
        assert!(spare.has_failed());
        assert!(!spare.is_replayable());
        assert!(spare.try_clone().is_none());
        // The copy made before the failure must not send `ab` and stop as if complete.
        let replay = spare.collect().await;
        assert!(replay.is_err(), "a replay of a failed body must fail");
    }

    #[test]
    fn a_replay_body_is_two_words() {
        // hyper's request queue keeps 32 request slots per connection: each byte here
        // is 32 bytes of every pooled connection.
        assert_eq!(
            std::mem::size_of::<ReplayBody<http_body_util::Empty<Bytes>>>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[tokio::test]
    async fn empty_body_is_at_its_end_from_the_start() {
        let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 0);
        assert!(body.is_end_stream());
        assert!(body.try_clone().is_some());
    }
}
