//! Reading an idle connection: what a wake of its parked future means, and the look
//! before reuse.
//!
//! **A wake** of a parked connection's [`Watch`](super::driver) says only that
//! something may have happened. It is read by polling the parked future again
//! ([`Conn::read_wake`]), outside tokio's cooperative budget: `Pending` means the
//! connection is still open and parks again (a TLS record the session consumed, such
//! as a TLS 1.3 `KeyUpdate` or a late `NewSessionTicket`; a poll that had been refused
//! for a spent budget); `Ready` means it ended, and the socket tells who ended it
//! ([`Pool::close_ended`]).
//!
//! **The look before reuse**: one non-blocking `recv(MSG_PEEK)` on the socket. The
//! pool hears of a FIN on an idle connection only when the runtime's IO driver next
//! polls the socket; between the FIN's arrival and that moment the kernel already
//! knows. A FIN (0 bytes), an error (a RST) or bytes mean the connection must not be
//! written to. Bytes are read through the parked future first: over TLS they may be a
//! record the session consumes, after which the socket is quiet again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::DriverEnd;
use super::idle::Idle;
use super::{Conn, Evict, Pool, Slot};
use crate::io::{Liveness, SocketHandle};
use crate::origin::Origin;

/// What the peek found, `None` when the connector gave no socket handle.
fn peek<B>(conn: &Conn<B>) -> Option<Liveness> {
    conn.socket.as_ref().map(|socket| socket.peek())
}

impl<B> Pool<B> {
    /// Closes an idle connection whose parked future ended, idle since `since`. The
    /// socket tells who ended it: a FIN, a RST, bytes, or a future that read the end
    /// of the stream or a reply it could not parse is the server, learned from at the
    /// time of the wake; an IO error with a quiet socket is the runtime's IO driver
    /// shutting down under it, which says nothing about the server.
    pub(super) fn close_ended(&self, origin: &Origin, conn: Conn<B>, since: Instant) {
        // Dropping the slot gives it back (or to the first waiter).
        drop(self.retire_ended(origin, conn, since));
    }

    /// Why a connection whose future ended did so (see [`Pool::close_ended`]).
    fn why_ended(&self, conn: &Conn<B>) -> (Evict, &'static str) {
        if let Some(found @ (Liveness::Closed | Liveness::Error(_) | Liveness::UnexpectedBytes)) =
            peek(conn)
        {
            return (Evict::ClosedByServer, found.describe());
        }
        // The socket is quiet, or there is none to ask: the future's own end tells.
        match conn.ended {
            Some(DriverEnd::RuntimeGone) => (Evict::TaskGone, "its runtime shut down"),
            None if conn.task_gone() => (Evict::TaskGone, "its task was dropped with its runtime"),
            Some(DriverEnd::Protocol) => (Evict::ClosedByServer, "server sent bytes while idle"),
            Some(DriverEnd::Io) => (Evict::ClosedByServer, "connection failed while idle"),
            Some(DriverEnd::Clean) | None => (Evict::ClosedByServer, "closed while idle"),
        }
    }

    /// Closes a connection that cannot carry another request as its response ends,
    /// counted under why: `Connection: close`, an upgrade, the server closing right
    /// behind the response (seen in a server's `IdleCloses`, not learned from as it
    /// is shorter than any margin), or the caller dropping the body before its end.
    pub(super) fn close_unusable(&self, origin: &Origin, conn: Conn<B>, now: Instant) {
        let idle_for = now.saturating_duration_since(conn.idle_since);
        let server_closed = conn.socket.as_ref().is_some_and(SocketHandle::peer_closed)
            || matches!(
                conn.ended,
                Some(DriverEnd::Clean | DriverEnd::Io | DriverEnd::Protocol)
            );
        let (reason, detail) = if conn.close_requested() {
            (Evict::ConnectionClose, "")
        } else if conn.upgraded() {
            (Evict::Upgraded, "")
        } else if conn.ended == Some(DriverEnd::RuntimeGone) || conn.task_gone() {
            (Evict::TaskGone, "its runtime shut down")
        } else if server_closed {
            (
                Evict::ClosedByServer,
                "closed by the server behind its response",
            )
        } else {
            (Evict::ResponseUnfinished, "")
        };
        if reason == Evict::ClosedByServer {
            self.observe_server_close(origin, idle_for);
        }
        self.evict(origin, conn, reason, idle_for, detail);
    }

    /// The last look before a pooled connection is reused: its deadline, a wake of its
    /// parked future, the peek. On failure the connection has been counted and closed,
    /// and its slot is returned, for a connection opened in its place.
    pub(super) fn hand_out(
        &self,
        origin: &Origin,
        idle: Idle<B>,
        now: Instant,
    ) -> Result<Conn<B>, Slot<B>> {
        let Idle {
            mut conn,
            since,
            deadline,
            reason,
        } = idle;
        let idle_for = now.saturating_duration_since(since);
        if now >= deadline {
            // A connection granted to a waiter whose deadline passed on the way.
            return Err(self.retire(origin, conn, reason, idle_for, ""));
        }
        if conn.woken_at().is_some() && !conn.read_wake() {
            // The reaper has not got to it yet.
            return Err(self.retire_ended(origin, conn, since));
        }
        if self.config.check_before_reuse {
            let mut found = peek(&conn);
            if found == Some(Liveness::UnexpectedBytes) {
                // Over TLS, a record the session will consume; read it through.
                if !conn.read_wake() {
                    return Err(self.retire_ended(origin, conn, since));
                }
                found = peek(&conn);
                if found == Some(Liveness::UnexpectedBytes) {
                    // Not yet readable to the future: never written to, but not
                    // learned from either, as it may not be a close at all.
                    return Err(self.retire(
                        origin,
                        conn,
                        Evict::ClosedByServer,
                        idle_for,
                        "unread bytes on an idle connection",
                    ));
                }
            }
            if let Some(found @ (Liveness::Closed | Liveness::Error(_))) = found {
                self.observe_server_close(origin, idle_for);
                return Err(self.retire(
                    origin,
                    conn,
                    Evict::ClosedByServer,
                    idle_for,
                    found.describe(),
                ));
            }
        }
        self.counters.reuses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            origin = %origin,
            conn = conn.id,
            idle_ms = idle_for.as_millis() as u64,
            "reusing pooled connection"
        );
        Ok(conn)
    }

    /// [`close_ended`](Pool::close_ended), keeping the slot.
    fn retire_ended(&self, origin: &Origin, conn: Conn<B>, since: Instant) -> Slot<B> {
        let at = conn.woken_at().unwrap_or_else(Instant::now);
        let idle_for = at.saturating_duration_since(since);
        let (reason, detail) = self.why_ended(&conn);
        if reason == Evict::ClosedByServer {
            self.observe_server_close(origin, idle_for);
        }
        self.retire(origin, conn, reason, idle_for, detail)
    }

    /// Counts and closes `conn` (the client sends the FIN) but keeps its slot.
    pub(super) fn retire(
        &self,
        origin: &Origin,
        conn: Conn<B>,
        reason: Evict,
        idle_for: Duration,
        detail: &str,
    ) -> Slot<B> {
        self.count_eviction(origin, &conn, reason, idle_for, detail);
        conn.into_slot()
    }
}
