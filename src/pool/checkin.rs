//! Check-in: how a connection comes back. Once hyper can take the next request on it
//! (for HTTP/1.1, when the response body has been read to its end), it goes to the
//! first waiter or to the idle list with its deadline, counted from when its response
//! head arrived; one that cannot carry another request is closed under the reason
//! why; one whose future ended while idle is closed under who ended it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::idle::{self, Idle};
use super::pending::{self, remove_pending, Pending, Returned, Task};
use super::slots::{self, Slot};
use super::{deadline, Conn, Evict, Pool};
use crate::origin::Origin;

impl<B: Send + 'static> Pool<B> {
    /// Takes back a connection whose response has been read to the end
    /// (`reusable`), or that hyper closed (`!reusable`).
    pub(crate) fn checkin(self: &Arc<Self>, conn: Conn<B>, reusable: bool) {
        self.checkin_inner(Returned::Conn(conn), reusable);
    }

    pub(super) fn checkin_inner(self: &Arc<Self>, returned: Returned<'_, B>, reusable: bool) {
        let now = Instant::now();
        let mut guard = self.lock();
        let conn = match returned {
            Returned::Conn(conn) => conn,
            Returned::Pending(pending) => {
                let Some(conn) = pending.take() else {
                    return;
                };
                if let Some(entry) = guard.origins.get_mut(conn.origin()) {
                    pending::remove_pending(entry, pending.id);
                }
                conn
            }
        };
        let origin = Arc::clone(conn.shared_origin());
        let since = conn.idle_since;
        if !reusable {
            drop(guard);
            self.close_unusable(&origin, conn, now);
            return;
        }
        let state = &mut *guard;
        let evidence = state
            .origins
            .get(&*origin)
            .map_or_else(Default::default, |entry| self.evidence_of(entry));
        // Counted from when the response head arrived, not from now: the caller may
        // have taken its time reading the body, while the server's timer ran.
        let (deadline, reason) = deadline::deadline(&conn, &self.config, since, &evidence);
        let retire = deadline::retire_reason(&conn, &self.config, now, &evidence)
            .or((deadline <= now).then_some(reason));
        if let Some(reason) = retire {
            drop(guard);
            let idle_for = now.saturating_duration_since(since);
            self.evict(&origin, conn, reason, idle_for, "");
            return;
        }
        let entry = state
            .origins
            .get_mut(&*origin)
            .expect("an origin entry lives as long as one of its slots");
        let mut idle = Idle {
            conn,
            deadline,
            reason,
        };
        // Only when someone waits: a round trip through `grant_conn` copies the
        // connection twice, on every check-in.
        if !entry.waiters.is_empty() {
            match slots::grant_conn(&mut entry.waiters, &mut state.starved, idle) {
                Some(not_taken) => idle = not_taken,
                None => return,
            }
        }
        let mut displaced = None;
        let mut start_reaper = None;
        if state.closed {
            // No client is left to reuse it.
            displaced = Some((idle, Evict::ClosedByUser));
        } else if !state.starved.is_empty() {
            // Requests to other origins wait for room under `max_connections_total`:
            // its slot goes to the first of them.
            displaced = Some((idle, Evict::ConnectionTotalLimit));
        } else if self.config.max_idle_per_origin == 0 {
            displaced = Some((idle, Evict::IdleListFull));
        } else {
            if entry.idle.len() >= self.config.max_idle_per_origin {
                if let Some(lru) = entry.idle.pop_front() {
                    state.idle.remove(&lru);
                    displaced = Some((lru, Evict::IdleListFull));
                }
            }
            let key = idle.key();
            state.idle.insert(&idle, &origin);
            entry.idle.push_back(idle);
            if displaced.is_none()
                && self
                    .config
                    .max_idle_total
                    .is_some_and(|max| state.idle.len() > max)
            {
                displaced = idle::take_least_recently_used(&mut state.origins, &mut state.idle)
                    .map(|lru| (lru, Evict::IdleTotalFull));
            }
            start_reaper = self.reaper_for_new_deadline(state, key);
        }
        // Before closing the displaced connection: its slot takes the lock.
        drop(guard);
        if let Some(generation) = start_reaper {
            self.start_reaper(generation);
        }
        if let Some((idle, reason)) = displaced {
            // Under a cap across origins, not necessarily of this one.
            let origin = Arc::clone(idle.conn.shared_origin());
            let idle_for = now.saturating_duration_since(idle.since());
            self.evict(&origin, idle.conn, reason, idle_for, "");
        }
    }

    /// Checks `conn` in once hyper can take the next request on it; until then a
    /// checkout may take it (see the module docs).
    pub(crate) fn check_in_when_ready(self: &Arc<Self>, mut conn: Conn<B>) {
        if conn.tx.is_ready() {
            // No body, or hyper has already taken all of it in: nothing to wait for,
            // and hyper's connection future can stay parked in the idle connection.
            let open = conn.park();
            self.checkin(conn, open);
            return;
        }
        if conn.tx.is_closed() {
            self.checkin(conn, false);
            return;
        }
        // The body is still arriving, for a caller who reads it at their own pace:
        // from now on a task of its own drives the connection.
        conn.spawn_driver();
        let pending = {
            let mut state = self.lock();
            let entry = state
                .origins
                .get_mut(conn.origin())
                .expect("an origin entry lives as long as one of its slots");
            let pending = Arc::new(Pending::new(conn));
            entry.pending.push(Arc::clone(&pending));
            pending
        };
        let task = Task {
            pool: Arc::downgrade(self),
            pending,
        };
        tokio::spawn(task.run());
    }

    /// [`checkin`](Pool::checkin) from a connection's check-in task: the connection is
    /// moved out of its cell under the pool's lock, unless a checkout took it.
    pub(super) fn checkin_pending(self: &Arc<Self>, pending: &Pending<B>, reusable: bool) {
        self.checkin_inner(Returned::Pending(pending), reusable);
    }
}

impl<B> Pool<B> {
    /// A check-in task gave up connection `id` of `origin` (not ready after all, or
    /// its runtime shut down): it is no longer pending.
    pub(super) fn forget_pending(&self, origin: &Origin, id: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.origins.get_mut(origin) {
            remove_pending(entry, id);
        }
    }

    /// Closes a connection that cannot carry another request as its response ends,
    /// counted under why (see [`Conn::why_unusable`]). A server closing right behind
    /// its response shows in its origin's `IdleCloses`; it is not learned from, being
    /// shorter than any margin.
    pub(super) fn close_unusable(&self, origin: &Origin, conn: Conn<B>, now: Instant) {
        let idle_for = now.saturating_duration_since(conn.idle_since);
        let (reason, detail) = conn.why_unusable();
        if reason == Evict::ClosedByServer {
            self.observe_server_close(origin, idle_for);
        }
        self.evict(origin, conn, reason, idle_for, detail);
    }

    /// Closes an idle connection whose parked future ended, idle since `since`, under
    /// who ended it (see [`Conn::why_ended`]); a server's close is learned from at the
    /// time of the wake. `probe`: it was the origin's probe, whose close is expected.
    pub(super) fn close_ended(&self, origin: &Origin, conn: Conn<B>, since: Instant, probe: bool) {
        // Dropping the slot gives it back (or to the first waiter).
        drop(self.retire_ended(origin, conn, since, probe));
    }

    /// [`close_ended`](Pool::close_ended), keeping the slot.
    pub(super) fn retire_ended(
        &self,
        origin: &Origin,
        conn: Conn<B>,
        since: Instant,
        probe: bool,
    ) -> Slot<B> {
        let at = conn.woken_at().unwrap_or_else(Instant::now);
        let idle_for = at.saturating_duration_since(since);
        let (reason, detail) = conn.why_ended();
        if reason == Evict::ClosedByServer {
            self.server_closed_idle(origin, idle_for, probe);
        }
        self.retire(origin, conn, reason, idle_for, detail)
    }

    /// The task running connection `id`'s future saw it end. If the connection was idle,
    /// the server closed it.
    pub(super) fn connection_ended(&self, origin: &Origin, id: u64) {
        // Out of the lock before the connection is closed: its slot takes the lock.
        let idle = self.lock().take_idle(origin, id);
        if let Some((idle, probe)) = idle {
            let idle_for = Instant::now().saturating_duration_since(idle.since());
            self.server_closed_idle(origin, idle_for, probe);
            self.evict(
                origin,
                idle.conn,
                Evict::ClosedByServer,
                idle_for,
                "closed while idle",
            );
        }
    }

    /// The server closed an idle connection of `origin` after `idle_for`: learned from;
    /// the origin's probe closing is expected, counted as the probe's outcome and not as
    /// a parity violation.
    fn server_closed_idle(&self, origin: &Origin, idle_for: Duration, probe: bool) {
        if probe {
            self.counters.probe_closed();
        }
        self.observe_close(origin, idle_for, probe);
    }
}
