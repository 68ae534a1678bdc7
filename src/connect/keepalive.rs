//! [`TcpKeepalive`]: the kernel keepalive settings the built-in connector applies to
//! every connection, and their validation, so that a setting the kernel would refuse
//! is refused when the client is built, with a message naming the option and unit.

use std::time::Duration;

use crate::error::Error;
use crate::io::keepalive_params;

/// TCP keepalive settings: the kernel probes an idle connection so a peer that
/// vanished (crashed host, dropped NAT entry) is noticed while the connection sits in
/// the pool, not when a request is written to it.
///
/// `TcpKeepalive::new()` starts from the defaults: probes after 30 s of silence,
/// every 10 s, 3 unanswered probes declare the peer dead (found within about a minute).
///
/// ```
/// use std::time::Duration;
/// let keepalive = closefirst::TcpKeepalive::new()
///     .idle(Duration::from_secs(60))
///     .interval(Duration::from_secs(5))
///     .retries(4);
/// # let _ = keepalive;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpKeepalive {
    idle: Duration,
    interval: Duration,
    retries: u32,
}

const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_KEEPALIVE_RETRIES: u32 = 3;
/// The largest `TCP_KEEPIDLE` and `TCP_KEEPINTVL` Linux accepts (`MAX_TCP_KEEPIDLE`,
/// `MAX_TCP_KEEPINTVL`); larger values fail with `EINVAL` when the socket is set up,
/// so they are refused when the client is built, on every platform alike.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// The largest `TCP_KEEPCNT` Linux accepts (`MAX_TCP_KEEPCNT`).
const MAX_KEEPALIVE_RETRIES: u32 = 127;

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive {
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            retries: DEFAULT_KEEPALIVE_RETRIES,
        }
    }
}

impl TcpKeepalive {
    /// The defaults: idle 30 s, interval 10 s, 3 retries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Silence before the first probe (`TCP_KEEPIDLE`; `TCP_KEEPALIVE` on macOS).
    /// Whole seconds, from 1 s to 32767 s (the most Linux accepts; refused beyond it
    /// on every platform, so a setting means the same everywhere). Defaults to
    /// 30 seconds.
    #[must_use]
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Time between unanswered probes (`TCP_KEEPINTVL`). Whole seconds, from 1 s to
    /// 32767 s (the most Linux accepts). Defaults to 10 seconds.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`). From 1 to
    /// 127 (the most Linux accepts). Defaults to 3.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The configured idle time.
    pub fn get_idle(&self) -> Duration {
        self.idle
    }

    /// The configured probe interval.
    pub fn get_interval(&self) -> Duration {
        self.interval
    }

    /// The configured number of probes.
    pub fn get_retries(&self) -> u32 {
        self.retries
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        whole_seconds("tcp_keepalive idle", self.idle)?;
        whole_seconds("tcp_keepalive interval", self.interval)?;
        if self.retries == 0 {
            return Err(Error::config(
                "tcp_keepalive retries must be at least 1 (got 0 probes)",
            ));
        }
        if self.retries > MAX_KEEPALIVE_RETRIES {
            return Err(Error::config(format!(
                "tcp_keepalive retries must be at most {MAX_KEEPALIVE_RETRIES} probes (got {} probes)",
                self.retries
            )));
        }
        Ok(())
    }

    pub(super) fn to_socket2(self) -> socket2::TcpKeepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(self.idle);
        keepalive_params(keepalive, self.interval, self.retries)
    }
}

fn whole_seconds(option: &str, value: Duration) -> Result<(), Error> {
    if value > Duration::from_secs(MAX_KEEPALIVE_SECS) {
        return Err(Error::config(format!(
            "{option} must be at most {MAX_KEEPALIVE_SECS} s (got {})",
            millis(value)
        )));
    }
    if value.is_zero() || value.subsec_nanos() != 0 {
        return Err(Error::config(format!(
            "{option} must be a whole number of seconds, at least 1 s (got {})",
            millis(value)
        )));
    }
    Ok(())
}

/// `value` in milliseconds, with the sub-millisecond part only when there is one:
/// `1500 ms`, `0.5 ms`.
pub(super) fn millis(value: Duration) -> String {
    let sub_milli = value.subsec_nanos() % 1_000_000;
    if sub_milli == 0 {
        format!("{} ms", value.as_millis())
    } else {
        let fraction = format!("{sub_milli:06}");
        format!(
            "{}.{} ms",
            value.as_millis(),
            fraction.trim_end_matches('0')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_shows_the_sub_millisecond_part_only_when_there_is_one() {
        assert_eq!(millis(Duration::ZERO), "0 ms");
        assert_eq!(millis(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(millis(Duration::from_micros(500)), "0.5 ms");
        assert_eq!(millis(Duration::from_nanos(1_000_001)), "1.000001 ms");
        assert_eq!(millis(Duration::MAX), "18446744073709551615999.999999 ms");
    }

    #[test]
    fn the_defaults_are_valid_and_out_of_range_values_are_refused() {
        assert!(TcpKeepalive::new().validate().is_ok());
        let max = Duration::from_secs(MAX_KEEPALIVE_SECS);
        let edge = TcpKeepalive::new()
            .idle(max)
            .interval(max)
            .retries(MAX_KEEPALIVE_RETRIES);
        assert!(edge.validate().is_ok());
        for refused in [
            TcpKeepalive::new().idle(Duration::ZERO),
            TcpKeepalive::new().idle(Duration::from_millis(1500)),
            TcpKeepalive::new().interval(max + Duration::from_secs(1)),
            TcpKeepalive::new().retries(0),
            TcpKeepalive::new().retries(MAX_KEEPALIVE_RETRIES + 1),
        ] {
            assert!(refused.validate().is_err(), "{refused:?}");
        }
    }
}
