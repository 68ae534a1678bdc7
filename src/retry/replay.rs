//! [`ReplayBody`]: a request body that can be sent again.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    ///
    /// One word: hyper's request queue keeps 32 requests' worth of slots per
    /// connection, so every byte here costs 32 for each pooled connection. That is why
    /// a copy's position is not a field beside this pointer but sits behind it.
    node: Option<Arc<Node<B>>>,
}

/// [`ReplayBody`]'s position of a copy that has yielded everything.
const DONE: usize = usize::MAX;

/// What a [`ReplayBody`] points to.
enum Node<B> {
    /// The body as first wrapped: the recording every copy shares, which also holds
    /// this copy's position, so that the first attempt allocates nothing more.
    First(Mutex<Shared<B>>),
    /// A copy made later (a resend): its own position in the first copy's recording.
    /// Only this copy moves it, under the recording's lock.
    Again {
        first: Arc<Node<B>>,
        position: AtomicUsize,
    },
}

impl<B> Node<B> {
    fn shared(&self) -> &Mutex<Shared<B>> {
        match self {
            Node::First(shared) => shared,
            Node::Again { first, .. } => first.shared(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        self.shared().lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_replayable(&self) -> bool {
        let shared = self.lock();
        !shared.overflowed && !shared.failed
    }

    fn has_failed(&self) -> bool {
        self.lock().failed
    }

    /// The node holding the recording (a copy of a copy shares the same first).
    fn first(self: &Arc<Self>) -> Arc<Node<B>> {
        match &**self {
            Node::First(_) => Arc::clone(self),
            Node::Again { first, .. } => Arc::clone(first),
        }
    }

    /// This copy's index of the next recorded chunk it yields, or [`DONE`].
    fn position(&self, shared: &Shared<B>) -> usize {
        match self {
            Node::First(_) => shared.first_position,
            Node::Again { position, .. } => position.load(Ordering::Relaxed),
        }
    }

    fn set_position(&self, shared: &mut Shared<B>, to: usize) {
        match self {
            Node::First(_) => shared.first_position = to,
            Node::Again { position, .. } => position.store(to, Ordering::Relaxed),
        }
    }
}

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
    /// The first copy's position (see [`Node::First`]).
    first_position: usize,
}

/// A handle on a [`ReplayBody`]'s recording that reads nothing: kept beside an
/// attempt in flight, to ask afterwards whether the body failed or can still be sent
/// again, and to make the copy for a resend. Taking one costs a reference count, so
/// an attempt that is never resent allocates nothing for it.
pub(crate) struct Recording<B> {
    first: Option<Arc<Node<B>>>,
}

impl<B> Recording<B> {
    /// See [`ReplayBody::is_replayable`].
    pub(crate) fn is_replayable(&self) -> bool {
        self.first.as_deref().is_none_or(Node::is_replayable)
    }

    /// See [`ReplayBody::has_failed`].
    pub(crate) fn has_failed(&self) -> bool {
        self.first.as_deref().is_some_and(Node::has_failed)
    }

    /// A copy that sends the body again from its start, or `None` when that is no
    /// longer possible.
    pub(crate) fn replay(&self) -> Option<ReplayBody<B>> {
        if !self.is_replayable() {
            return None;
        }
        Some(ReplayBody {
            node: self.first.as_ref().map(|first| {
                Arc::new(Node::Again {
                    first: Arc::clone(first),
                    position: AtomicUsize::new(0),
                })
            }),
        })
    }
}

impl<B: HttpBody> ReplayBody<B> {
    /// Wraps `body`, keeping up to `cap` bytes of it for replay.
    pub fn new(body: B, cap: usize) -> Self {
        let size_hint = body.size_hint();
        let empty = body.is_end_stream();
        let node = (!empty).then(|| {
            Arc::new(Node::First(Mutex::new(Shared {
                inner: Some(Box::pin(body)),
                recorded: VecDeque::new(),
                recorded_bytes: 0,
                trailers: None,
                size_hint,
                ended: false,
                overflowed: false,
                failed: false,
                cap,
                first_position: 0,
            })))
        });
        ReplayBody { node }
    }
}

impl<B: HttpBody> ReplayBody<B> {
    /// Wraps `body` without keeping anything: it is sent once and cannot be replayed.
    pub(crate) fn passthrough(body: B) -> Self {
        let body = ReplayBody::new(body, 0);
        if let Some(node) = &body.node {
            node.lock().overflowed = true;
        }
        body
    }
}

impl<B> ReplayBody<B> {
    /// A copy that sends the body again from its start, or `None` when that is no
    /// longer possible (more than the cap was read).
    pub fn try_clone(&self) -> Option<Self> {
        self.recording().replay()
    }

    /// Whether [`try_clone`](ReplayBody::try_clone) would succeed: false once more than
    /// the cap was read, or once the wrapped body has failed.
    pub fn is_replayable(&self) -> bool {
        self.node.as_deref().is_none_or(Node::is_replayable)
    }

    /// A handle that reads nothing, kept to ask about the body after it was handed to
    /// hyper, and to make the copy for a resend.
    pub(crate) fn recording(&self) -> Recording<B> {
        Recording {
            first: self.node.as_ref().map(Node::first),
        }
    }

    /// Whether the wrapped body yielded an error (on any copy).
    pub fn has_failed(&self) -> bool {
        self.node.as_deref().is_some_and(Node::has_failed)
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(node) = self.node.as_ref() else {
            return Poll::Ready(None);
        };
        let mut shared = node.lock();
        let position = node.position(&shared);
        if position == DONE {
            return Poll::Ready(None);
        }
        if shared.failed {
            node.set_position(&mut shared, DONE);
            return Poll::Ready(Some(Err(BodyFailedEarlier.into())));
        }
        if let Some(chunk) = shared.recorded.get(position) {
            let chunk = chunk.clone();
            node.set_position(&mut shared, position + 1);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if shared.ended {
            node.set_position(&mut shared, DONE);
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
                node.set_position(&mut shared, DONE);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // No copy may ever send this body again, not even the part recorded.
                shared.failed = true;
                shared.inner = None;
                shared.recorded.clear();
                node.set_position(&mut shared, DONE);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    if !shared.overflowed {
                        if shared.recorded_bytes + chunk.len() <= shared.cap {
                            shared.recorded_bytes += chunk.len();
                            shared.recorded.push_back(chunk.clone());
                            node.set_position(&mut shared, position + 1);
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
                        node.set_position(&mut shared, DONE);
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // Neither data nor trailers: a frame kind this crate does not know.
                    Err(_) => Poll::Ready(Some(Err("unsupported request body frame".into()))),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.node
            .as_ref()
            .is_none_or(|node| node.position(&node.lock()) == DONE)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.node {
            Some(node) => node.lock().size_hint,
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

    #[tokio::test]
    async fn copies_read_at_their_own_positions_even_interleaved() {
        let frames = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::data(Bytes::from_static(b"ef")),
        ]));
        let mut first = ReplayBody::new(frames, 64);
        let recording = first.recording();
        let data = |frame: Option<Result<Frame<Bytes>, BoxError>>| {
            frame
                .expect("a frame")
                .expect("no error")
                .into_data()
                .expect("data")
        };
        assert_eq!(data(first.frame().await), "ab");
        // A resend's copy starts while the first copy (say, still inside hyper) has not
        // been dropped: neither may take the other's chunks.
        let mut again = recording.replay().expect("within the cap");
        assert_eq!(data(again.frame().await), "ab");
        assert_eq!(data(again.frame().await), "cd");
        assert_eq!(data(first.frame().await), "cd");
        assert_eq!(data(first.frame().await), "ef");
        assert_eq!(data(again.frame().await), "ef");
        assert!(again.frame().await.is_none());
        assert!(first.frame().await.is_none());
        assert!(first.is_end_stream() && again.is_end_stream());
        // And a third copy still replays the whole body.
        let third = recording.replay().expect("within the cap");
        assert_eq!(collect(third).await, "abcdef");
    }

    #[test]
    fn a_replay_body_is_one_word() {
        // hyper's request queue keeps 32 request slots per connection: each byte here
        // is 32 bytes of every pooled connection.
        assert_eq!(
            std::mem::size_of::<ReplayBody<http_body_util::Empty<Bytes>>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[tokio::test]
    async fn empty_body_is_at_its_end_from_the_start() {
        let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 0);
        assert!(body.is_end_stream());
        assert!(body.try_clone().is_some());
    }
}
