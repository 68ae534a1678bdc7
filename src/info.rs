//! What the pool tells about a response's connection and about itself.

use std::collections::BTreeMap;
use std::time::Duration;

mod connection;

pub use connection::ConnectionInfo;
pub(crate) use connection::Poison;

/// A snapshot of the pool's counters, from [`Client::stats`](crate::Client::stats).
///
/// Counters (`connections_opened`, `reuses`, `evictions`) only grow; gauges (`idle`,
/// `active`, `waiting`) are the values at the time of the snapshot.
/// [`Client::origin_stats`](crate::Client::origin_stats) gives the same per origin,
/// with who closed idle connections first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Connections opened since the client was built.
    pub connections_opened: u64,
    /// Times a pooled connection was handed out again.
    pub reuses: u64,
    /// Connections sitting idle in the pool now.
    pub idle: usize,
    /// Connections open or being opened and not idle: carrying a request, or waiting
    /// for their response body to be read.
    pub active: usize,
    /// Requests waiting for a connection under `max_connections_per_origin` or
    /// `max_connections_total`.
    pub waiting: usize,
    /// Of `waiting`, the requests waiting for room under `max_connections_total` (their
    /// origin is below its own limit). Above zero, the client as a whole is at its cap;
    /// they are served in arrival order across origins.
    pub waiting_for_room: usize,
    /// Connections removed from the pool, by reason.
    pub evictions: Evictions,
    /// Failed requests sent again, by how far they had got.
    pub resends: Resends,
    /// Failed requests not sent again, by reason.
    pub refusals: Refusals,
    /// Probes of servers' idle timers.
    pub probes: Probes,
    /// Connections opened ahead of traffic by
    /// [`Client::preconnect`](crate::Client::preconnect).
    pub preconnects: Preconnects,
    /// The idle time after which each origin's server (`http://host:port`) was last seen
    /// closing a connection, as the pool uses it. See [`Builder::learn_idle_timeout`](crate::Builder::learn_idle_timeout).
    pub learned_idle_timeouts: BTreeMap<String, Duration>,
}

/// One origin's share of the pool, from
/// [`Client::origin_stats`](crate::Client::origin_stats): the live evidence for (or
/// against) keep-alive parity with that server.
///
/// Counters only grow while the origin is tracked; gauges (`idle`, `active`,
/// `waiting`, `learned_idle_timeout`) are the values at the time of the snapshot. The
/// pool tracks at most [`MAX_TRACKED_ORIGINS`] origins; beyond that, the one that
/// opened a connection least recently is forgotten (its counters start again from
/// zero if it comes back).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OriginStats {
    /// The origin, `scheme://host[:port]` (no default port), as in
    /// [`PoolStats::learned_idle_timeouts`].
    pub origin: String,
    /// The host as a connector dials it: a name, or an IP address (IPv6 without
    /// brackets).
    pub host: String,
    /// The port, the scheme's default when the URI names none.
    pub port: u16,
    /// Connections to this origin sitting idle in the pool now.
    pub idle: usize,
    /// Connections to this origin open or being opened and not idle.
    pub active: usize,
    /// Requests waiting for a connection to this origin under
    /// `max_connections_per_origin` or `max_connections_total`.
    pub waiting: usize,
    /// Connections opened to this origin.
    pub connections_opened: u64,
    /// Connections to this origin removed from the pool, by reason.
    pub evictions: Evictions,
    /// The idle time after which this server was last seen closing a connection, as
    /// the pool uses it; `None` when none was seen (or learning is off).
    pub learned_idle_timeout: Option<Duration>,
    /// How long a connection to this origin may stay idle now (for a request that may
    /// be resent; a connection's own `Keep-Alive` hint applies to it alone), and
    /// [`idle_deadline_source`](OriginStats::idle_deadline_source) says why.
    pub idle_deadline: Duration,
    /// Where [`idle_deadline`](OriginStats::idle_deadline) comes from.
    pub idle_deadline_source: DeadlineSource,
    /// The longest idle time this server was seen to allow: a connection reused after
    /// it that got its response, or the probe still open then. Zero until seen.
    pub proven_idle: Duration,
    /// The idle time this origin's probe is testing, while one runs.
    pub probe: Option<Duration>,
    /// Who closed idle connections first: the client at its deadline, or the server.
    pub idle_closes: IdleCloses,
    /// Failed requests to this origin that the retry policy would have resent but for
    /// this origin's retry budget, which was spent: its share of
    /// [`Refusals::budget_exhausted`]. Each origin has a budget of its own (see
    /// [`retry`](crate::retry)); this counts while the budget is kept.
    pub retry_budget_exhausted: u64,
}

/// Where an origin's idle deadline comes from. See [`OriginStats::idle_deadline`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadlineSource {
    /// Nothing is known of the server's timer: [`Builder::idle_timeout`](crate::Builder::idle_timeout).
    #[default]
    Configured,
    /// The server's `Keep-Alive: timeout` hint, minus the margin (up to
    /// [`Builder::max_idle_timeout`](crate::Builder::max_idle_timeout)).
    Hint,
    /// A close the pool saw, minus the margin: the server's timer.
    ObservedClose,
    /// An idle time the server was seen to allow (a reuse answered after it, or the
    /// probe still open), minus the margin.
    Proven,
}

impl DeadlineSource {
    /// A short name: `configured`, `hint`, `observed_close`, `proven`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineSource::Configured => "configured",
            DeadlineSource::Hint => "hint",
            DeadlineSource::ObservedClose => "observed_close",
            DeadlineSource::Proven => "proven",
        }
    }
}

/// The probes the pool ran to learn servers' idle timers upward (see
/// [`Builder::learn_idle_timeout`](crate::Builder::learn_idle_timeout)). Each costs one
/// idle connection that no request rides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Probes {
    /// Probes running now (at most one per origin).
    pub running: usize,
    /// Probes started.
    pub started: u64,
    /// Probes still open at their target idle time: that much is proven.
    pub proven: u64,
    /// Probes the server closed first: its timer is known.
    pub closed_by_server: u64,
}

/// Connections opened ahead of traffic by
/// [`Client::preconnect`](crate::Client::preconnect). See [`PoolStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Preconnects {
    /// Connections opened (TLS included) and put in the pool idle; also counted in
    /// `connections_opened`.
    pub opened: u64,
    /// Connections that failed to open (each logged at `warn`); no request saw the
    /// error.
    pub failed: u64,
}

/// The most origins [`Client::origin_stats`](crate::Client::origin_stats) tracks.
pub const MAX_TRACKED_ORIGINS: usize = 1024;

/// Who closed idle connections first, per origin. See [`OriginStats`].
///
/// With parity (`server keep-alive >= client idle timeout + margin`) every idle
/// connection is closed by the client at its deadline and `by_server` stays zero. A
/// server close of an idle connection is the live parity violation: the server's
/// keep-alive is shorter than the client's deadline for that connection, and a request
/// racing the server's FIN can fail. The first one per origin is logged at `warn`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdleCloses {
    /// Idle connections the client closed when their deadline passed (idle timeout,
    /// server hint, learned timeout or lifetime), before the server did.
    pub by_client: u64,
    /// Idle connections the server closed first: seen closing while idle, found closed
    /// by the pre-reuse check, or met closing by a request on a reused connection.
    pub by_server: u64,
    /// The shortest time a connection had been idle when the server closed it: an
    /// upper bound of the server's keep-alive. `None` until the server closes one.
    pub shortest_server_close: Option<Duration>,
}

/// Failed requests that were sent again, by how far they had got. See
/// [`retry`](crate::retry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resends {
    /// Never written (hyper handed the request back); resent by the pool itself.
    pub not_written: u64,
    /// Written on a reused connection with no response byte back; resent because the
    /// policy allowed it (idempotent method, a request [marked as safe to
    /// resend](crate::retry#marking-a-request-as-safe-to-resend), or `all_methods`).
    pub written_no_response: u64,
}

/// Failed requests that were not sent again, by reason. See [`retry`](crate::retry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusals {
    /// The method is not idempotent and the request was not [marked as safe to
    /// resend](crate::retry#marking-a-request-as-safe-to-resend) (no `Idempotency-Key`
    /// or `X-Idempotency-Key` header, no [`Idempotent`](crate::retry::Idempotent)
    /// extension).
    pub not_idempotent: u64,
    /// The body was larger than `max_replay_body_bytes`.
    pub body_too_large: u64,
    /// The retry budget of the request's origin was spent.
    pub budget_exhausted: u64,
    /// Response bytes had arrived: the request was executed.
    pub response_started: u64,
    /// The failure was on a fresh connection: not the stale-connection race.
    pub fresh_connection: u64,
    /// The policy's attempts were used up.
    pub attempts_exhausted: u64,
    /// The request's own body yielded an error: it is never resent, whatever the policy.
    pub body_failed: u64,
}

impl Refusals {
    /// The sum of all reasons.
    pub fn total(&self) -> u64 {
        self.iter()
            .fold(0, |sum, (_, count)| sum.saturating_add(count))
    }

    /// Each reason, named as its field is, with its count, in the order the fields are
    /// declared: for exporters and logs, so that none is left out.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        // Destructured without `..`, so that a new reason cannot be left out here.
        let Refusals {
            not_idempotent,
            body_too_large,
            budget_exhausted,
            response_started,
            fresh_connection,
            attempts_exhausted,
            body_failed,
        } = *self;
        [
            ("not_idempotent", not_idempotent),
            ("body_too_large", body_too_large),
            ("budget_exhausted", budget_exhausted),
            ("response_started", response_started),
            ("fresh_connection", fresh_connection),
            ("attempts_exhausted", attempts_exhausted),
            ("body_failed", body_failed),
        ]
        .into_iter()
    }
}

/// Connections the pool closed or dropped, counted by reason. See [`PoolStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evictions {
    /// Closed by the client after `idle_timeout`.
    pub idle_timeout: u64,
    /// Closed by the client before the server's `Keep-Alive: timeout` (less the margin)
    /// ran out, or not reused because the hint (`timeout` or `max`) left no room.
    pub server_hint: u64,
    /// Closed because the connection reached its (jittered) `max_lifetime`.
    pub lifetime: u64,
    /// Closed after `max_requests_per_connection` requests.
    pub max_requests: u64,
    /// Not pooled because the request or response carried `Connection: close`.
    pub connection_close: u64,
    /// Found closed by the server (FIN, RST, or unexpected bytes) while idle.
    pub closed_by_server: u64,
    /// Closed because `max_idle_per_origin` connections were already idle; the least
    /// recently used one goes.
    pub idle_list_full: u64,
    /// Closed by the client before the server's learned idle timeout (less the
    /// margin) ran out, or not reused because it left no room.
    pub learned_timeout: u64,
    /// Closed because the caller dropped the request future (a timeout of its own, a
    /// client that went away) while the request was on the connection: a connection
    /// with a request abandoned half-way cannot carry another.
    pub cancelled: u64,
    /// Closed to make room at `max_connections_per_origin` for a resend that needs a
    /// fresh connection: the least recently used idle connection of the origin goes.
    pub connection_limit: u64,
    /// Found idle and unusable because the tokio runtime its socket was registered with
    /// was shut down (a client kept across runtimes, as in a `static`). Not counted as
    /// closed by the server, and not learned from.
    pub task_gone: u64,
    /// Closed after a request on it failed: the caller's own body failed, hyper
    /// refused the request, or the connection failed before the response was complete
    /// (a stale reused connection the server had closed counts as `closed_by_server`).
    pub request_failed: u64,
    /// Closed because its response body was dropped (or failed) before its end: a
    /// connection with part of a response unread cannot carry another request. With a
    /// connector that gives no socket handle, a connection on a task of its own that
    /// ends as its response does counts here too, as the pool cannot tell the server's
    /// FIN from a body dropped unread.
    pub response_unfinished: u64,
    /// Handed to the caller after `101 Switching Protocols`
    /// (`hyper::upgrade::on`); it never returns to the pool.
    pub upgraded: u64,
    /// Closed idle by [`Client::close_idle`](crate::Client::close_idle) or
    /// [`Client::close_idle_origin`](crate::Client::close_idle_origin), or because the
    /// last clone of the client was dropped (the client sends the FIN).
    pub closed_by_user: u64,
    /// Closed instead of reused because the caller marked it with
    /// [`ConnectionInfo::poison`].
    pub poisoned: u64,
    /// Closed because `max_idle_total` connections were already idle across all
    /// origins; the least recently used one, of any origin, goes.
    pub idle_total_full: u64,
    /// Closed to make room at `max_connections_total` for a request that needed a new
    /// connection: the least recently used idle connection of any origin, or one
    /// checked in while requests to other origins were waiting for room.
    pub connection_total_limit: u64,
}

impl Evictions {
    /// The sum of all reasons.
    pub fn total(&self) -> u64 {
        self.iter()
            .fold(0, |sum, (_, count)| sum.saturating_add(count))
    }

    /// Each reason, named as its field is, with its count, in the order the fields are
    /// declared: for exporters and logs, so that none is left out.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        // Destructured without `..`, so that a new reason cannot be left out here.
        let Evictions {
            idle_timeout,
            server_hint,
            lifetime,
            max_requests,
            connection_close,
            closed_by_server,
            idle_list_full,
            learned_timeout,
            cancelled,
            connection_limit,
            task_gone,
            request_failed,
            response_unfinished,
            upgraded,
            closed_by_user,
            poisoned,
            idle_total_full,
            connection_total_limit,
        } = *self;
        [
            ("idle_timeout", idle_timeout),
            ("server_hint", server_hint),
            ("lifetime", lifetime),
            ("max_requests", max_requests),
            ("connection_close", connection_close),
            ("closed_by_server", closed_by_server),
            ("idle_list_full", idle_list_full),
            ("learned_timeout", learned_timeout),
            ("cancelled", cancelled),
            ("connection_limit", connection_limit),
            ("task_gone", task_gone),
            ("request_failed", request_failed),
            ("response_unfinished", response_unfinished),
            ("upgraded", upgraded),
            ("closed_by_user", closed_by_user),
            ("poisoned", poisoned),
            ("idle_total_full", idle_total_full),
            ("connection_total_limit", connection_total_limit),
        ]
        .into_iter()
    }
}

/// Socket options as the kernel reports them (`getsockopt`), not as configured.
///
/// A field is `None` where the platform has no such option or the kernel refused to
/// report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `TCP_NODELAY`.
    pub nodelay: Option<bool>,
    /// `SO_KEEPALIVE`.
    pub keepalive: Option<bool>,
    /// `TCP_KEEPIDLE` (`TCP_KEEPALIVE` on macOS).
    pub keepalive_idle: Option<Duration>,
    /// `TCP_KEEPINTVL`.
    pub keepalive_interval: Option<Duration>,
    /// `TCP_KEEPCNT`.
    pub keepalive_retries: Option<u32>,
    /// `TCP_USER_TIMEOUT` (Linux). `None` when it is not set (the kernel's own
    /// retransmission limits apply) or the platform has no such option.
    pub user_timeout: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_named_once_and_counted_in_the_total() {
        let e = Evictions {
            closed_by_server: 3,
            task_gone: u64::MAX,
            ..Evictions::default()
        };
        let names: std::collections::HashSet<_> = e.iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), e.iter().count());
        assert_eq!(
            e.iter().find(|(n, _)| *n == "closed_by_server"),
            Some(("closed_by_server", 3))
        );
        assert_eq!(e.total(), u64::MAX, "the total saturates");
        let r = Refusals {
            body_failed: 2,
            not_idempotent: 5,
            ..Refusals::default()
        };
        let names: std::collections::HashSet<_> = r.iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), r.iter().count());
        assert_eq!(
            r.iter().find(|(n, _)| *n == "body_failed"),
            Some(("body_failed", 2))
        );
        assert_eq!(r.total(), 7);
    }
}
