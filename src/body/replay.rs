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
/// Past the cap, only the copy that read past it goes on reading the wrapped body. A
/// copy made earlier that has not yielded the whole body yet has lost what it still
/// needs: its next poll yields an error saying that the body outgrew the replay cap,
/// never an early end (a server would take a body that ends early as complete when it
/// has no length to check it against) and never a chunk that belongs to another copy.
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

/// [`ReplayBody`]'s position of the one copy that reads the wrapped body past the cap,
/// with nothing recorded: the copy that read past it, or a body sent only once
/// ([`ReplayBody::passthrough`]). Every other copy that is not [`DONE`] fails.
const READS_THROUGH: usize = usize::MAX - 1;

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

    /// This copy's index of the next recorded chunk it yields, or [`DONE`], or
    /// [`READS_THROUGH`].
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
    /// More than the cap was read: the recording is incomplete for good, and only the
    /// copy at [`READS_THROUGH`] may read the wrapped body.
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
            let mut shared = node.lock();
            shared.overflowed = true;
            node.set_position(&mut shared, READS_THROUGH);
        }
        body
    }
}

impl<B> ReplayBody<B> {
    /// A copy that sends the body again from its start, or `None` when that is no
    /// longer possible (more than the cap was read, or the wrapped body failed).
    ///
    /// The copy relies on the recording: if any copy reads past the cap before this
    /// one has yielded everything, this one yields an error (the body outgrew the
    /// replay cap) rather than part of the body.
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
        if shared.overflowed && position != READS_THROUGH {
            // What this copy still needs was read by another copy and not kept: the
            // rest of the wrapped body is that copy's.
            node.set_position(&mut shared, DONE);
            return Poll::Ready(Some(Err(OutgrewReplayCap.into())));
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
                            node.set_position(&mut shared, READS_THROUGH);
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

/// What a copy of a [`ReplayBody`] yields when another copy has read past the cap
/// before this one yielded everything: the part it still needs was not kept.
#[derive(Debug)]
struct OutgrewReplayCap;

impl fmt::Display for OutgrewReplayCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the request body outgrew the replay cap while another copy was sent, \
             so this copy cannot be sent",
        )
    }
}

impl std::error::Error for OutgrewReplayCap {}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("replayable", &self.is_replayable())
            .finish()
    }
}

#[cfg(test)]
mod tests;
