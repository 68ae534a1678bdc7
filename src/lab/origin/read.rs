//! Reading one request from a connection's buffer: the head (parsed by `httparse`),
//! then a sized or chunked body.

use bytes::{Buf, BytesMut};

use super::conn::{Conn, Stop};
use super::request::{parse_chunk_size, parse_head, BodyKind, Head};

/// Largest request head (request line and headers) the origin accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Largest single line (chunk-size line or trailer) in a chunked body.
const MAX_LINE: usize = 8 * 1024;

impl Conn {
    /// Reads and parses a request head, consuming it from the buffer.
    pub(super) async fn read_head(&mut self) -> Result<Head, Stop> {
        loop {
            if let Some((head, len)) = parse_head(&self.buf)? {
                self.buf.advance(len);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Stop::Malformed);
            }
            if self.fill().await? == 0 {
                return Err(Stop::Gone);
            }
        }
    }

    /// Reads the request body into `into` (de-chunked).
    pub(super) async fn read_body(
        &mut self,
        body: BodyKind,
        into: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        match body {
            BodyKind::Length(len) => self.take(len, into).await,
            BodyKind::Chunked => loop {
                let size = loop {
                    if let Some((line, size)) = parse_chunk_size(&self.buf)? {
                        self.buf.advance(line);
                        break size;
                    }
                    if self.buf.len() > MAX_LINE {
                        return Err(Stop::Malformed);
                    }
                    if self.fill().await? == 0 {
                        return Err(Stop::Gone);
                    }
                };
                if size == 0 {
                    // Trailer fields, up to the empty line.
                    while !self.read_line().await?.is_empty() {}
                    return Ok(());
                }
                self.take(size, into).await?;
                if !self.read_line().await?.is_empty() {
                    return Err(Stop::Malformed);
                }
            },
        }
    }

    /// Moves exactly `len` bytes of input into `into`.
    async fn take(&mut self, mut len: usize, into: &mut Vec<u8>) -> Result<(), Stop> {
        loop {
            let take = len.min(self.buf.len());
            into.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            len -= take;
            if len == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(Stop::Gone);
            }
        }
    }

    /// Reads one CRLF-terminated line, returned without the CRLF.
    async fn read_line(&mut self) -> Result<BytesMut, Stop> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let mut line = self.buf.split_to(pos + 2);
                line.truncate(pos);
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(Stop::Malformed);
            }
            if self.fill().await? == 0 {
                return Err(Stop::Gone);
            }
        }
    }
}
