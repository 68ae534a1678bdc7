//! How a connection ends, and who ended it: what hyper's connection future said as it
//! finished, and what one non-blocking peek at the socket shows. Read when a parked
//! connection's future ends while idle, and when a connection cannot carry another
//! request as its response ends; the answer is the eviction reason it is counted
//! under, and whether the pool learns from it (only a close by the server).

use super::Conn;
use crate::io::{Liveness, SocketHandle};
use crate::pool::Evict;

/// How hyper's connection future ended, as far as it tells: with what the pool reads
/// from the socket (see `liveness`), who ended the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::pool) enum End {
    /// It read the end of the stream (a FIN, or a `close_notify` over TLS).
    Clean,
    /// An IO error from the socket: a RST, most often.
    Io,
    /// The IO error tokio gives every socket of a runtime that is shutting down.
    RuntimeGone,
    /// Anything else: bytes it could not take as a response, a protocol error.
    Protocol,
}

impl End {
    pub(super) fn of(result: &hyper::Result<()>) -> End {
        match result {
            Ok(()) => End::Clean,
            Err(error) => {
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                        // tokio fails the IO of a runtime being shut down with an
                        // `Other` error; a peer's close or reset has a kind of its own.
                        return if io.kind() == std::io::ErrorKind::Other {
                            End::RuntimeGone
                        } else {
                            End::Io
                        };
                    }
                    source = cause.source();
                }
                End::Protocol
            }
        }
    }
}

impl<B> Conn<B> {
    /// One non-blocking peek at the socket (see `io::peek`): `None` when the connector
    /// gave no socket handle.
    pub(in crate::pool) fn peek(&self) -> Option<Liveness> {
        self.socket.as_ref().map(SocketHandle::peek)
    }

    /// Why the connection ended while it was idle: a FIN, a RST or bytes on the socket,
    /// or a future that read the end of the stream or a reply it could not parse, is
    /// the server's close; an IO error with a quiet socket is the runtime's IO driver
    /// shutting down under it, which says nothing about the server.
    pub(in crate::pool) fn why_ended(&self) -> (Evict, &'static str) {
        if let Some(found @ (Liveness::Closed | Liveness::Error(_) | Liveness::UnexpectedBytes)) =
            self.peek()
        {
            return (Evict::ClosedByServer, found.describe());
        }
        // The socket is quiet, or there is none to ask: the future's own end tells.
        match self.ended() {
            Some(End::RuntimeGone) => (Evict::TaskGone, "its runtime shut down"),
            None if self.task_gone() => (Evict::TaskGone, "its task was dropped with its runtime"),
            Some(End::Protocol) => (Evict::ClosedByServer, "server sent bytes while idle"),
            Some(End::Io) => (Evict::ClosedByServer, "connection failed while idle"),
            Some(End::Clean) | None => (Evict::ClosedByServer, "closed while idle"),
        }
    }

    /// Why a connection cannot carry another request as its response ends:
    /// `Connection: close`, an upgrade, its runtime gone, the server closing right
    /// behind the response (a FIN or RST read from the socket, or a parked future that
    /// ended), or else the caller dropping the body before its end.
    pub(in crate::pool) fn why_unusable(&self) -> (Evict, &'static str) {
        let server_closed = self.socket.as_ref().is_some_and(SocketHandle::peer_closed)
            || matches!(self.ended(), Some(End::Clean | End::Io | End::Protocol));
        if self.close_requested() {
            (Evict::ConnectionClose, "")
        } else if self.upgraded() {
            (Evict::Upgraded, "")
        } else if self.ended() == Some(End::RuntimeGone) || self.task_gone() {
            (Evict::TaskGone, "its runtime shut down")
        } else if server_closed {
            (
                Evict::ClosedByServer,
                "closed by the server behind its response",
            )
        } else {
            (Evict::ResponseUnfinished, "")
        }
    }
}
