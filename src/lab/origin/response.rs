//! The bytes an origin writes: its answers, and what each [`Fault`] sends instead.

use super::config::{Fault, Settings};

/// Body of every answer unless responses are numbered.
const BODY: &str = "ok\n";
/// Answer to a request the origin cannot parse; the connection is closed after it.
pub(super) const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Written before an idle close when asked for.
pub(super) const STRAY_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Written for [`Fault::EarlyReject`] after the request head, before its body is read.
pub(super) const EARLY_413: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Written for [`Fault::SwitchProtocols`]; the connection then echoes every byte.
pub(super) const SWITCHING_PROTOCOLS: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";

/// What one answer looks like.
pub(super) struct Answer<'a> {
    pub(super) settings: &'a Settings,
    /// Requests answered on this connection, this one included.
    pub(super) served: usize,
    /// The connection's index, in accept order.
    pub(super) connection: usize,
    /// Handler calls for the request's id so far, if it has one.
    pub(super) id_calls: Option<usize>,
    pub(super) head_method: bool,
    /// The answer announces `Connection: close`.
    pub(super) close: bool,
}

impl Answer<'_> {
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let settings = self.settings;
        let mut body = if settings.numbered_responses {
            format!("ok {}", self.served)
        } else {
            BODY.to_owned()
        };
        body.extend(std::iter::repeat_n('.', settings.body_padding));
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        if settings.numbered_responses {
            head.push_str(&format!(
                "content-length: {}\r\nx-connection: {}\r\n",
                body.len(),
                self.connection
            ));
            if let Some(count) = self.id_calls {
                head.push_str(&format!("x-handler-calls-for-id: {count}\r\n"));
            }
        } else {
            head.push_str(&format!(
                "content-type: text/plain\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        if let Some(value) = &settings.keep_alive_header {
            head.push_str(&format!("keep-alive: {value}\r\n"));
        } else if settings.keep_alive_hint && !self.close {
            let secs = settings.idle_timeout.as_secs().max(1);
            head.push_str(&format!("keep-alive: timeout={secs}\r\n"));
        }
        if self.close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_method {
            bytes.extend_from_slice(body.as_bytes());
        }
        bytes
    }
}

/// The bytes `fault` writes before its close (empty for none), if it is one that just
/// writes and closes.
pub(super) fn fault_bytes(fault: &Fault) -> Vec<u8> {
    match fault {
        Fault::PartialHeadThenClose => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-par".to_vec(),
        Fault::HalfBodyThenClose => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello".to_vec(),
        Fault::GarbageStatusLine => b"HTTP/1.1 2xx nonsense\r\n\r\n".to_vec(),
        Fault::NotHttp => b"FOO\r\n\r\n".to_vec(),
        Fault::HugeHeaders => huge_headers(),
        Fault::ConflictingContentLength => {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde".to_vec()
        }
        // Truncated: `content-length: 100`, 3 bytes of body.
        Fault::PartialResponseThenRst => {
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc".to_vec()
        }
        // Not even a whole head: the client has response bytes but no response.
        Fault::PartialHeadThenRst => b"HTTP/1.1 200 OK\r\ncontent-len".to_vec(),
        Fault::FinWithoutAnswer
        | Fault::RstWithoutAnswer
        | Fault::RstWithoutAnswerThenRefuse
        | Fault::EarlyReject
        | Fault::BlackHole
        | Fault::SwitchProtocols => Vec::new(),
    }
}

/// A status line, [`Fault::HUGE_HEADERS_BYTES`] of header lines and a blank line.
fn huge_headers() -> Vec<u8> {
    let line = format!("x-filler: {}\r\n", "a".repeat(1000));
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
    while out.len() < Fault::HUGE_HEADERS_BYTES {
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}
