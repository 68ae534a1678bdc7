//! [`ReplayBody`]: replays, the cap, failures, and copies read side by side.

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

/// What a poll of a copy gave, as text: `data:..`, `error: ..` or `end`.
fn outcome(frame: Option<Result<Frame<Bytes>, BoxError>>) -> String {
    match frame {
        None => "end".to_owned(),
        Some(Err(error)) => format!("error: {error}"),
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => format!("data:{}", String::from_utf8_lossy(&data)),
            Err(_) => "trailers".to_owned(),
        },
    }
}

/// The words the error of a copy that lost its recording must say.
const OUTGREW: &str = "outgrew the replay cap";

#[tokio::test]
async fn a_copy_made_before_the_cap_was_passed_fails_rather_than_end_early() {
    // No size hint and several chunks: what a streamed (chunked) upload looks like,
    // where a body that ends early is taken by the server as complete.
    let frames = Frames(VecDeque::from([
        Frame::data(Bytes::from_static(b"abc")),
        Frame::data(Bytes::from_static(b"def")),
    ]));
    let body = ReplayBody::new(frames, 4);
    assert_eq!(
        body.size_hint().exact(),
        None,
        "no length to betray a short body"
    );
    let copy = body.try_clone().expect("nothing read yet");
    assert_eq!(collect(body).await, "abcdef", "the original is sent whole");
    match copy.collect().await {
        Ok(collected) => panic!(
            "a copy of a body past its replay cap ended cleanly after {} bytes: \
             a truncated body the server takes as complete",
            collected.to_bytes().len()
        ),
        Err(error) => assert!(error.to_string().contains(OUTGREW), "says why: {error}"),
    }
}

#[tokio::test]
async fn once_the_recording_is_gone_no_copy_takes_the_wrapped_bodys_chunks() {
    let frames = Frames(VecDeque::from([
        Frame::data(Bytes::from_static(b"ab")),
        Frame::data(Bytes::from_static(b"cd")),
        Frame::data(Bytes::from_static(b"ef")),
    ]));
    let mut first = ReplayBody::new(frames, 3);
    let mut copy = first.try_clone().expect("nothing read yet");
    // The copy reads `ab` from the wrapped body (recorded), the first copy replays it,
    // then reads `cd` from the wrapped body: past the cap, the recording is dropped.
    assert_eq!(outcome(copy.frame().await), "data:ab");
    assert_eq!(outcome(first.frame().await), "data:ab");
    assert_eq!(outcome(first.frame().await), "data:cd");
    // The copy has lost `cd` for good: it must fail, not send `ef` next (out of order)
    // and so take it from the first copy, which would then end early.
    let next = outcome(copy.frame().await);
    assert!(
        next.starts_with("error: ") && next.contains(OUTGREW),
        "the copy that lost its recording must fail, got {next}"
    );
    assert_eq!(
        outcome(copy.frame().await),
        "end",
        "a failed copy then ends"
    );
    assert_eq!(
        outcome(first.frame().await),
        "data:ef",
        "nothing was taken from it"
    );
    assert_eq!(outcome(first.frame().await), "end");
}

#[tokio::test]
async fn a_copy_at_the_end_of_the_recording_fails_when_the_next_chunk_was_not_kept() {
    // Both copies are at the recording's end when the first copy reads past the cap:
    // the other one never saw the chunk that was not recorded.
    let frames = Frames(VecDeque::from([
        Frame::data(Bytes::from_static(b"ab")),
        Frame::data(Bytes::from_static(b"cdef")),
        Frame::trailers(HeaderMap::new()),
    ]));
    let mut first = ReplayBody::new(frames, 4);
    let mut copy = first.try_clone().expect("nothing read yet");
    assert_eq!(outcome(first.frame().await), "data:ab");
    assert_eq!(outcome(copy.frame().await), "data:ab");
    assert_eq!(outcome(first.frame().await), "data:cdef");
    assert_eq!(outcome(first.frame().await), "trailers");
    assert_eq!(outcome(first.frame().await), "end");
    let next = outcome(copy.frame().await);
    assert!(next.contains(OUTGREW), "not trailers nor an end: {next}");
    assert!(copy.is_end_stream());
}

#[tokio::test]
async fn a_body_sent_once_reads_through_without_recording() {
    let frames = Frames(VecDeque::from([
        Frame::data(Bytes::from_static(b"ab")),
        Frame::data(Bytes::from_static(b"cd")),
        Frame::trailers(HeaderMap::new()),
    ]));
    let body = ReplayBody::passthrough(frames);
    assert!(!body.is_replayable());
    assert!(body.try_clone().is_none());
    let collected = body.collect().await.expect("body reads");
    assert!(collected.trailers().is_some());
    assert_eq!(collected.to_bytes(), "abcd");
}
