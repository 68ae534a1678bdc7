//! Reading a request head with `httparse`: only what the origin needs to know.

/// Most header lines a request head may have.
const MAX_HEADERS: usize = 128;

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyKind {
    Length(usize),
    Chunked,
}

/// The parts of a request head the origin acts on.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// The `x-request-id` header.
    pub(super) id: Option<String>,
    /// The header fields, kept only for a request with an id (see
    /// [`Origin::request_headers`](super::Origin::request_headers)).
    pub(super) headers: Option<http::HeaderMap>,
    /// The client wants the connection kept open after this request.
    pub(super) keep_alive: bool,
    /// `HEAD`: the response has no body.
    pub(super) head_method: bool,
    pub(super) body: BodyKind,
}

/// The bytes are not a request the origin understands.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete,
/// `Ok(Some((head, len)))` with the head's length once it is in.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Malformed),
    };
    let http_11 = match request.version {
        Some(1) => true,
        Some(0) => false,
        _ => return Err(Malformed),
    };
    let mut head = Head {
        id: None,
        headers: None,
        keep_alive: http_11,
        head_method: request.method == Some("HEAD"),
        body: BodyKind::Length(0),
    };
    let (mut length, mut chunked) = (None::<usize>, false);
    let (mut says_close, mut says_keep_alive) = (false, false);
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("x-request-id") {
            head.id = Some(text(header.value)?.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = text(header.value)?.parse().map_err(|_| Malformed)?;
            // Two different lengths: no way to tell where the body ends.
            if length.is_some_and(|prev| prev != n) {
                return Err(Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked, when present, is the last coding and decides the framing.
            let last = text(header.value)?.rsplit(',').next().unwrap_or("");
            if !last.trim().eq_ignore_ascii_case("chunked") {
                return Err(Malformed);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            says_close |= crate::header::list_has(header.value, "close");
            says_keep_alive |= crate::header::list_has(header.value, "keep-alive");
        }
    }
    if head.id.is_some() {
        head.headers = Some(header_map(request.headers));
    }
    head.body = if chunked {
        BodyKind::Chunked
    } else {
        BodyKind::Length(length.unwrap_or(0))
    };
    // `close` wins, whatever the order; HTTP/1.0 keeps alive only when asked to.
    head.keep_alive = !says_close && (http_11 || says_keep_alive);
    Ok(Some((head, len)))
}

/// The fields `http` can represent, in order; any other (httparse lets a few bytes
/// through that `http` refuses) is left out rather than failing the request.
fn header_map(headers: &[httparse::Header<'_>]) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for header in headers {
        let name = http::HeaderName::from_bytes(header.name.as_bytes());
        let value = http::HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    map
}

fn text(value: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(value)
        .map(str::trim)
        .map_err(|_| Malformed)
}

/// Parses a chunk-size line at the start of `buf`: `Ok(None)` while it is
/// incomplete, `Ok(Some((line_len, size)))` once it is in.
pub(super) fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, usize)>, Malformed> {
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((len, size))) => {
            let size = usize::try_from(size).map_err(|_| Malformed)?;
            Ok(Some((len, size)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Head, Malformed> {
        let (head, len) = parse_head(raw)?.expect("a complete head");
        assert_eq!(len, raw.len());
        Ok(head)
    }

    #[test]
    fn parses_framing_connection_and_id() {
        let r =
            parse(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Request-Id: 7\r\n\r\n")
                .unwrap();
        assert_eq!(r.body, BodyKind::Length(5));
        assert_eq!(r.id.as_deref(), Some("7"));
        assert!(r.keep_alive);
        let headers = r.headers.expect("kept for a request with an id");
        assert_eq!(headers.get("host").map(|v| v.as_bytes()), Some(&b"a"[..]));
        assert_eq!(headers.len(), 3);

        let r = parse(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, BodyKind::Chunked);
        assert!(!r.keep_alive);
        assert_eq!(r.headers, None, "no id, nothing kept");

        let r = parse(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(r.keep_alive && r.head_method);
        assert!(!parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);

        assert_eq!(parse_head(b"GET /\r\n\r\n"), Err(Malformed));
        assert_eq!(parse_head(b"NONSENSE\r\n\r\n"), Err(Malformed));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(Malformed)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\n"),
            Err(Malformed)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(Malformed)
        );
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert_eq!(parse_head(b""), Ok(None));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let (_, len) = parse_head(b"GET / HTTP/1.1\r\n\r\nNEXT").unwrap().unwrap();
        assert_eq!(len, 18);
    }

    #[test]
    fn measures_chunk_size_lines() {
        assert_eq!(parse_chunk_size(b"5;ext=1\r\nhello"), Ok(Some((9, 5))));
        assert_eq!(parse_chunk_size(b"0\r\n\r\n"), Ok(Some((3, 0))));
        assert_eq!(parse_chunk_size(b"1a"), Ok(None));
        assert_eq!(parse_chunk_size(b"zz\r\n"), Err(Malformed));
        assert_eq!(parse_chunk_size(b"fffffffffffffffff\r\n"), Err(Malformed));
    }
}
