//! The look before reuse: one non-blocking peek at an idle connection's socket.
//!
//! The pool hears of a FIN on an idle connection only when the runtime's IO driver
//! next polls the socket. Between the FIN's arrival and that moment the kernel already
//! knows the connection is closing, and a
//! `recv(MSG_PEEK)` that would block proves it is not. A FIN (0 bytes), an error (a
//! RST) or any byte at all (a server must not speak first on an idle HTTP/1.1
//! connection; a `408` before closing is the usual case) means the connection must not
//! be written to.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{Conn, Evict, Pool};
use crate::io::Liveness;
use crate::origin::Origin;

/// `Ok` when the connection may be reused; otherwise what the peek found. A
/// connection whose connector gives no socket handle cannot be checked and passes.
fn check<B>(conn: &Conn<B>) -> Result<(), Liveness> {
    match conn.socket.as_ref().map(|socket| socket.peek()) {
        None | Some(Liveness::Alive) => Ok(()),
        Some(found) => Err(found),
    }
}

impl<B> Pool<B> {
    /// Closes an idle connection whose parked future was woken (see
    /// [`driver`](super::driver)), idle since `since`: a server close, learned from at
    /// the time of the wake-up, if its socket shows one; otherwise its runtime's IO
    /// driver shut down under it, which says nothing about the server.
    pub(super) fn close_woken(&self, origin: &Origin, conn: Conn<B>, since: Instant) {
        let woken_at = conn.woken_at().unwrap_or_else(Instant::now);
        let idle_for = woken_at.saturating_duration_since(since);
        match conn.socket.as_ref().map(|socket| socket.peek()) {
            Some(Liveness::Alive) => self.evict(
                origin,
                conn,
                Evict::TaskGone,
                idle_for,
                "woken with nothing to read: its runtime shut down",
            ),
            found => {
                self.observe_server_close(origin, idle_for);
                let detail = found.map_or("closed while idle", Liveness::describe);
                self.evict(origin, conn, Evict::ClosedByServer, idle_for, detail);
            }
        }
    }

    /// The last look before a pooled connection is reused. `None` when it was found
    /// closed (and has been evicted).
    pub(super) fn hand_out(
        &self,
        origin: &Origin,
        conn: Conn<B>,
        idle_for: Duration,
    ) -> Option<Conn<B>> {
        if conn.woken_at().is_some() {
            // The reaper has not got to it yet.
            let since = Instant::now()
                .checked_sub(idle_for)
                .unwrap_or_else(Instant::now);
            self.close_woken(origin, conn, since);
            return None;
        }
        if self.config.check_before_reuse {
            if let Err(liveness) = check(&conn) {
                self.observe_server_close(origin, idle_for);
                self.evict(
                    origin,
                    conn,
                    Evict::ClosedByServer,
                    idle_for,
                    liveness.describe(),
                );
                return None;
            }
        }
        self.counters.reuses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            origin = %origin,
            conn = conn.id,
            idle_ms = idle_for.as_millis() as u64,
            "reusing pooled connection"
        );
        Some(conn)
    }
}
