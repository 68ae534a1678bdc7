//! The look before reuse: one non-blocking peek at an idle connection's socket.
//!
//! hyper's connection task notices a FIN only when it next runs. Between the FIN's
//! arrival and that moment the kernel already knows the connection is closing, and a
//! `recv(MSG_PEEK)` that would block proves it is not. A FIN (0 bytes), an error (a
//! RST) or any byte at all (a server must not speak first on an idle HTTP/1.1
//! connection; a `408` before closing is the usual case) means the connection must not
//! be written to.

use super::Conn;
use crate::io::Liveness;

/// `Ok` when the connection may be reused; otherwise what the peek found. A
/// connection whose connector gives no socket handle cannot be checked and passes.
pub(super) fn check<B>(conn: &Conn<B>) -> Result<(), Liveness> {
    match conn.socket.as_ref().map(|socket| socket.peek()) {
        None | Some(Liveness::Alive) => Ok(()),
        Some(found) => Err(found),
    }
}
