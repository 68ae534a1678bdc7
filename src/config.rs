//! [`PoolConfig`]: every setting of the pool, its default, and its validation. A leaf:
//! the builder fills it in, the pool and the client read it.

use std::time::Duration;

use crate::error::Error;

/// Default [`Builder::idle_timeout`](crate::Builder::idle_timeout): below the 5 s keep-alive of uvicorn and Node.js
/// (and well below gunicorn's 2 s once the margin applies to a hint), so the client
/// closes first against the common defaults.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Default [`Builder::max_idle_timeout`](crate::Builder::max_idle_timeout): the
/// longest a connection may stay idle on a server's hint or on what the pool proved of
/// its timer. 90 s is what Go's `Transport` and hyper-util keep idle connections by
/// default, above nginx's 75 s so that nginx's timer can be found, and below the
/// 4–10 minutes after which cloud load balancers and NAT gateways drop an idle flow
/// silently; kernel keepalive (30 s idle by default) keeps such an entry alive anyway,
/// so the bound is for servers and middleboxes that ignore it.
pub const DEFAULT_MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Default [`Builder::keep_alive_margin`](crate::Builder::keep_alive_margin), for an `idle_timeout` of 4 seconds or more;
/// below that the default margin is a quarter of `idle_timeout`.
pub const DEFAULT_KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);
/// The default margin is at most this share (1/4) of `idle_timeout`, so that a short
/// `idle_timeout` set on its own always builds.
const DEFAULT_MARGIN_DIVISOR: u32 = 4;
/// Default [`Builder::max_idle_per_origin`](crate::Builder::max_idle_per_origin): no
/// limit (`usize::MAX`). An idle connection lives at most `idle_timeout` (or less, by
/// the server's hint or the learned timeout), so the idle list never holds more than
/// the origin's peak concurrency of the last few seconds, connections the process was
/// already holding open; a lower cap turns every burst above it into closes and
/// reconnects, handshakes at the busiest moment.
pub const DEFAULT_MAX_IDLE_PER_ORIGIN: usize = usize::MAX;
/// Default [`Builder::checkout_timeout`](crate::Builder::checkout_timeout).
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Builder::connect_timeout`](crate::Builder::connect_timeout).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of times a request may be sent in all (one resend), as
/// [`Policy::idempotent`](crate::retry::Policy::idempotent) sets it.
pub(crate) const DEFAULT_ATTEMPTS: u32 = 2;

/// The validated settings the pool runs with.
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    pub(crate) idle_timeout: Duration,
    /// The ceiling for hints and proven timers (at least `idle_timeout`).
    pub(crate) max_idle_timeout: Duration,
    pub(crate) keep_alive_margin: Duration,
    pub(crate) max_idle_per_origin: usize,
    pub(crate) max_connections_per_origin: Option<usize>,
    /// Idle connections across all origins (probes included).
    pub(crate) max_idle_total: Option<usize>,
    /// Connections open or opening across all origins.
    pub(crate) max_connections_total: Option<usize>,
    pub(crate) checkout_timeout: Option<Duration>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) max_requests_per_connection: Option<u64>,
    pub(crate) check_before_reuse: bool,
    /// Total dispatches per request, from the retry policy.
    pub(crate) max_attempts: u32,
    pub(crate) learn_idle_timeout: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_idle_timeout: DEFAULT_MAX_IDLE_TIMEOUT,
            keep_alive_margin: DEFAULT_KEEP_ALIVE_MARGIN,
            max_idle_per_origin: DEFAULT_MAX_IDLE_PER_ORIGIN,
            max_connections_per_origin: None,
            max_idle_total: None,
            max_connections_total: None,
            checkout_timeout: Some(DEFAULT_CHECKOUT_TIMEOUT),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            max_lifetime: None,
            max_requests_per_connection: None,
            check_before_reuse: true,
            max_attempts: DEFAULT_ATTEMPTS,
            learn_idle_timeout: true,
        }
    }
}

impl PoolConfig {
    /// Checks the settings and fills in what depends on others: the margin, unless
    /// `explicit_margin` was set, follows `idle_timeout`; `max_attempts` comes from the
    /// retry policy. Refuses bad values with an error naming the option and the unit.
    pub(crate) fn validated(
        self,
        explicit_margin: Option<Duration>,
        max_attempts: u32,
    ) -> Result<PoolConfig, Error> {
        let c = &self;
        if c.idle_timeout.is_zero() {
            return Err(Error::config(
                "idle_timeout must be greater than zero (got 0 ms)",
            ));
        }
        let keep_alive_margin = match explicit_margin {
            Some(margin) if margin >= c.idle_timeout => {
                return Err(Error::config(format!(
                    "keep_alive_margin ({} ms) must be smaller than idle_timeout ({} ms)",
                    margin.as_millis(),
                    c.idle_timeout.as_millis()
                )));
            }
            Some(margin) => margin,
            None => default_margin(c.idle_timeout),
        };
        if c.max_connections_per_origin == Some(0) {
            return Err(Error::config(
                "max_connections_per_origin must be at least 1 (got 0 connections)",
            ));
        }
        if c.max_idle_total == Some(0) {
            return Err(Error::config(
                "max_idle_total must be at least 1 (got 0 connections); \
                 use max_idle_per_origin(0) to turn reuse off",
            ));
        }
        if c.max_connections_total == Some(0) {
            return Err(Error::config(
                "max_connections_total must be at least 1 (got 0 connections)",
            ));
        }
        if c.max_requests_per_connection == Some(0) {
            return Err(Error::config(
                "max_requests_per_connection must be at least 1 (got 0 requests)",
            ));
        }
        for (name, value) in [
            ("max_lifetime", c.max_lifetime),
            ("checkout_timeout", c.checkout_timeout),
            ("connect_timeout", c.connect_timeout),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(Error::config(format!(
                    "{name} must be greater than zero (got 0 ms); use None for no limit"
                )));
            }
        }
        Ok(PoolConfig {
            keep_alive_margin,
            max_attempts,
            ..self
        })
    }
}

/// The margin used when none is set: [`DEFAULT_KEEP_ALIVE_MARGIN`], or a quarter of
/// `idle_timeout` when that is smaller, so the default never refuses a valid
/// `idle_timeout` (it stays below any non-zero one).
fn default_margin(idle_timeout: Duration) -> Duration {
    DEFAULT_KEEP_ALIVE_MARGIN.min(idle_timeout / DEFAULT_MARGIN_DIVISOR)
}
