//! Closing and counting a connection ([`Pool::evict`], [`Pool::retire`]), and the
//! reaper: the task that handles idle connections when their deadlines pass.
//!
//! One task per pool sleeps until the earliest deadline in the pool's deadline index
//! (not a fixed tick), handles what has expired (closes it, gives it a later deadline
//! when a probe proved more since its check-in, or keeps it as the origin's probe; see
//! [`learn`](super::learn)), reads the wakes of parked idle connections, and ends when
//! the pool is dropped; a check-in whose deadline comes first wakes it early. If its runtime
//! shuts down under a pool that lives on (a client in a static), the next check-in on
//! another runtime starts a new one. Checkout refuses an expired connection on its own,
//! so correctness never depends on when the reaper runs.

use std::future::Future;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use std::time::Duration;

use super::deadline;
use super::idle::Idle;
use super::learn::Evidence;
use super::stats::Closing;
use super::{Conn, Evict, Pool, Slot, State};
use crate::io::Liveness;
use crate::origin::Origin;

/// The reaper task. Holds only a `Weak` to the pool, so it never keeps the pool alive,
/// and ends at its next wake-up after the pool is gone (the pool's `Drop` wakes it).
///
/// `generation` tells this reaper from a later one: however the task ends (the pool
/// is gone, or its runtime shut down and dropped it), it marks the pool as having no
/// reaper, unless a newer one has started since, so that the next check-in starts one.
fn reap<B: Send + 'static>(
    pool: Weak<Pool<B>>,
    wake: Arc<Notify>,
    generation: u64,
) -> impl Future<Output = ()> + Send {
    // Made outside the `async` block so that it is dropped (and resets the flag) even
    // if the task is dropped before it first runs.
    let running = Running {
        pool: pool.clone(),
        generation,
    };
    async move {
        let _running = running;
        loop {
            let next = match pool.upgrade() {
                Some(pool) => pool.evict_expired(Instant::now()),
                None => return,
            };
            match next {
                Some(deadline) => {
                    let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
                }
                None => wake.notified().await,
            }
        }
    }
}

/// Marks the pool as having no reaper when the reaper task ends or is dropped.
struct Running<B> {
    pool: Weak<Pool<B>>,
    generation: u64,
}

impl<B> Drop for Running<B> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.reaper_ended(self.generation);
        }
    }
}

impl<B: Send + 'static> Pool<B> {
    /// Starts reaper `generation` on the current runtime. Never under the lock: on a
    /// runtime that is shutting down, `spawn` drops the task at once, and its guard
    /// takes the lock to record that the reaper ended.
    pub(super) fn start_reaper(self: &Arc<Self>, generation: u64) {
        let reaper = reap(
            Arc::downgrade(self),
            Arc::clone(&self.reaper_wake),
            generation,
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(reaper)),
            // A check-in outside any runtime (a drop in plain code): dropping the
            // reaper marks the pool as having none, so the next check-in on a runtime
            // starts one; checkout refuses expired connections meanwhile.
            Err(_) => drop(reaper),
        }
    }
}

impl<B> Pool<B> {
    /// Reaper bookkeeping for an idle connection just indexed under `key`, under the
    /// lock: the generation of a reaper to start (after unlocking) when none runs;
    /// otherwise the running one is woken if `key` is now the earliest deadline.
    #[inline]
    pub(super) fn reaper_for_new_deadline(
        &self,
        state: &mut State<B>,
        key: (Instant, u64),
    ) -> Option<u64> {
        if !state.reaper_running {
            state.reaper_running = true;
            state.reaper_generation = state.reaper_generation.wrapping_add(1);
            return Some(state.reaper_generation);
        }
        if state.reaper_wakes_at.is_none_or(|at| key.0 < at) {
            // The reaper sleeps until a later deadline; this one comes first. Waking it
            // for every check-in would cost a task wake-up per request: a connection
            // checked in again gets a later deadline than the one the reaper waits for,
            // and the reaper, finding nothing expired then, sleeps until the new one.
            state.reaper_wakes_at = Some(key.0);
            self.reaper_wake.notify_one();
        }
        None
    }

    /// Reads the wakes of parked idle connections, and handles every idle connection
    /// whose deadline has passed: one whose origin's evidence has grown since its
    /// check-in gets the later deadline; the first of an origin to reach a deadline
    /// that nothing but `idle_timeout` or a proof set becomes the origin's probe (see
    /// [`learn`](super::learn)); a probe that reaches its target proves it; the others
    /// are closed. Returns when to run again, if ever.
    fn evict_expired(&self, now: Instant) -> Option<Instant> {
        let mut expired = Vec::new();
        let mut probes_done = Vec::new();
        let mut probes_started = 0;
        let woken = self.woken.take();
        let mut news = Vec::new();
        let next = {
            let mut guard = self.lock();
            let state = &mut *guard;
            for (origin, id) in woken {
                // A wake is read by polling the parked future again: only a connection
                // still idle and parked since its watch was woken (a request that took
                // it meanwhile polls the future itself), and only one that ended leaves.
                let Some(entry) = state.origins.get_mut(&origin) else {
                    continue;
                };
                let woken_here =
                    |idle: &Idle<B>| idle.conn.id() == id && idle.conn.woken_at().is_some();
                if entry.probe.as_ref().is_some_and(woken_here) {
                    // (A probe is never handed out, so never poisoned.)
                    let open = entry
                        .probe
                        .as_mut()
                        .is_none_or(|probe| probe.conn.read_wake());
                    if let Some(probe) = entry.probe.take_if(|_| !open) {
                        state.idle.remove(&probe);
                        news.push((origin, probe, true));
                    }
                    continue;
                }
                let Some(position) = entry.idle.iter().position(|idle| idle.conn.id() == id) else {
                    continue;
                };
                let conn = &mut entry.idle[position].conn;
                // Listed by `ConnectionInfo::poison` rather than woken: closed now.
                let poisoned = conn.poisoned();
                if !poisoned && (conn.woken_at().is_none() || conn.read_wake()) {
                    continue;
                }
                if let Some(idle) = entry.idle.remove(position) {
                    state.idle.remove(&idle);
                    if poisoned {
                        expired.push((
                            origin,
                            Idle {
                                reason: Evict::Poisoned,
                                ..idle
                            },
                        ));
                    } else {
                        news.push((origin, idle, false));
                    }
                }
            }
            while let Some((id, origin)) = state.idle.pop_expired(now) {
                let Some((mut idle, probe)) = state.take_idle(&origin, id) else {
                    continue;
                };
                if probe {
                    probes_done.push((origin, idle));
                    continue;
                }
                let Some(entry) = state.origins.get_mut(&origin) else {
                    expired.push((origin, idle));
                    continue;
                };
                let evidence = self.evidence_of(entry);
                // A probe may have proven more since this connection was checked in.
                let (deadline, reason) =
                    deadline::deadline(&idle.conn, &self.config, idle.since(), &evidence);
                if deadline > now {
                    let idle = Idle {
                        deadline,
                        reason,
                        ..idle
                    };
                    state.idle.insert(&idle, &entry.origin);
                    entry.idle.push_front(idle);
                    continue;
                }
                if reason == Evict::IdleTimeout && entry.probe.is_none() {
                    if let Some(at) = self.probe_deadline(&idle, &evidence, now) {
                        idle.deadline = at;
                        state.idle.insert(&idle, &entry.origin);
                        entry.probe = Some(idle);
                        probes_started += 1;
                        continue;
                    }
                }
                expired.push((origin, idle));
            }
            let next = state.idle.earliest();
            state.reaper_wakes_at = next;
            next
        };
        // Idle connections whose future ended (most often the server's FIN).
        for (origin, idle, probe) in news {
            let since = idle.since();
            self.close_ended(&origin, idle.conn, since, probe);
        }
        for (origin, probe) in probes_done {
            self.probe_reached_its_target(&origin, probe, now);
        }
        for (origin, idle) in expired {
            let idle_for = now.saturating_duration_since(idle.since());
            self.evict(&origin, idle.conn, idle.reason, idle_for, "");
        }
        self.counters.probes_started(probes_started);
        next
    }
}

impl<B> Pool<B> {
    /// Reaper `generation` ended (or never started): the next check-in starts another,
    /// unless a newer one runs already.
    fn reaper_ended(&self, generation: u64) {
        let mut state = self.lock();
        if state.reaper_generation == generation {
            state.reaper_running = false;
            state.reaper_wakes_at = None;
        }
    }
}

impl<B> Pool<B> {
    /// Closes what a checkout found unusable on its way (connections of `origin`, and
    /// one of any origin closed to make room under `max_connections_total`); a close by
    /// the server is an observation of its idle timer.
    #[inline]
    pub(super) fn close_all(&self, origin: &Origin, closing: Vec<Closing<B>>, now: Instant) {
        for Closing {
            conn,
            since,
            reason,
            detail,
        } in closing
        {
            if reason == Evict::ConnectionTotalLimit {
                let other = Arc::clone(conn.shared_origin());
                let idle_for = now.saturating_duration_since(since);
                self.evict(&other, conn, reason, idle_for, detail);
                continue;
            }
            let idle_for = now.saturating_duration_since(since);
            if reason == Evict::ClosedByServer {
                self.observe_server_close(origin, idle_for);
            }
            self.evict(origin, conn, reason, idle_for, detail);
        }
    }

    /// Closes `conn`, counting and logging why; its slot is given back (or to the
    /// first waiter).
    pub(crate) fn evict(
        &self,
        origin: &Origin,
        conn: Conn<B>,
        reason: Evict,
        idle_for: Duration,
        detail: &str,
    ) {
        drop(self.retire(origin, conn, reason, idle_for, detail));
    }

    /// Counts and closes `conn` but keeps its slot. Dropping the last `SendRequest`
    /// makes hyper close the socket: the client sends the FIN.
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

    /// Counts and logs the closing of `conn`; the caller closes it.
    pub(super) fn count_eviction(
        &self,
        origin: &Origin,
        conn: &Conn<B>,
        reason: Evict,
        idle_for: Duration,
        detail: &str,
    ) {
        // Counted once: a connection whose end was not counted by then is counted when
        // its watch goes (see `IdleWaker`'s `Drop`).
        if conn.mark_counted() {
            self.counters.count_eviction(origin, reason, idle_for);
        }
        tracing::debug!(
            origin = %origin,
            conn = conn.id(),
            reason = reason.as_str(),
            detail,
            idle_ms = idle_for.as_millis() as u64,
            requests = conn.requests,
            "closing connection"
        );
    }

    /// Whether `idle`, which reached its deadline, becomes its origin's probe, and
    /// until when: out of rotation until the idle time the probe tests
    /// (`deadline::probe_target`). `None` when it may not be one: learning is off, the
    /// ceiling is reached, or its lifetime ends first.
    fn probe_deadline(&self, idle: &Idle<B>, evidence: &Evidence, now: Instant) -> Option<Instant> {
        let (allowed, _) = deadline::allowed_idle(idle.conn.hint_timeout, evidence, &self.config);
        let target = deadline::probe_target(allowed, &self.config)?;
        let at = deadline::deadline_after(idle.since(), target);
        if at <= now || idle.conn.expires.is_some_and(|expires| expires <= at) {
            return None;
        }
        tracing::debug!(
            origin = %idle.conn.origin(),
            conn = idle.conn.id(),
            allowed_ms = allowed.as_millis() as u64,
            target_ms = target.as_millis() as u64,
            "idle connection kept as the origin's probe"
        );
        Some(at)
    }

    /// The origin's probe reached the idle time it tests: still open, that much is
    /// proven and the probe closes (the client sends the FIN); found closed, the server
    /// closed it about then, which is learned from.
    fn probe_reached_its_target(&self, origin: &Origin, probe: Idle<B>, now: Instant) {
        let tested = probe.deadline.saturating_duration_since(probe.since());
        let open = !probe.conn.tx.is_closed()
            && probe.conn.woken_at().is_none()
            && matches!(probe.conn.peek(), None | Some(Liveness::Alive));
        if !open {
            let since = probe.since();
            self.close_ended(origin, probe.conn, since, true);
            return;
        }
        self.counters.probe_proven();
        self.prove(origin, tested);
        let idle_for = now.saturating_duration_since(probe.since());
        self.evict(
            origin,
            probe.conn,
            Evict::IdleTimeout,
            idle_for,
            "probe: the server kept it",
        );
    }
}
