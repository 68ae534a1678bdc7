//! The rule of thumb as a check: the backend keeps idle connections longer than the
//! front closes them, with a margin.

use std::fmt;
use std::time::Duration;

/// Checks that the side closer to the backend closes idle connections last:
/// `backend_keep_alive >= front_idle + margin`.
///
/// `front_idle` is how long the client (a proxy's upstream pool, an SDK, this crate's
/// `idle_timeout`) keeps an idle connection; `backend_keep_alive` is how long the server
/// keeps it (uvicorn 5 s, gunicorn 2 s, Node 5 s, nginx 75 s by default); `margin`
/// covers the time a request spends in flight and timer slack. When this holds, the
/// client always closes first and never writes onto a connection the server is
/// closing.
///
/// The sum is computed exactly: huge values never panic and never wrap.
///
/// # Errors
///
/// A [`ParityError`] when `backend_keep_alive < front_idle + margin`.
///
/// ```
/// use std::time::Duration;
/// use closefirst::keepalive::check_parity;
///
/// let ms = Duration::from_millis;
/// assert!(check_parity(ms(4000), ms(5000), ms(1000)).is_ok());
///
/// let err = check_parity(ms(4500), ms(5000), ms(1000)).unwrap_err();
/// assert_eq!(err.shortfall(), ms(500));
/// assert_eq!(
///     err.to_string(),
///     "backend keep-alive 5000 ms is shorter than front idle timeout 4500 ms + margin 1000 ms: \
///      raise the backend keep-alive to at least 5500 ms, \
///      or lower the front idle timeout to at most 4000 ms"
/// );
/// ```
pub fn check_parity(
    front_idle: Duration,
    backend_keep_alive: Duration,
    margin: Duration,
) -> Result<(), ParityError> {
    // u128 nanoseconds hold the sum of two `Duration`s without overflow.
    if backend_keep_alive.as_nanos() >= front_idle.as_nanos() + margin.as_nanos() {
        Ok(())
    } else {
        Err(ParityError {
            front_idle,
            backend_keep_alive,
            margin,
        })
    }
}

/// The backend would close idle connections before (or too soon after) the front: the
/// failure of [`check_parity`].
///
/// [`Display`](fmt::Display) says which side must change and by how much; the
/// accessors give the same numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParityError {
    front_idle: Duration,
    backend_keep_alive: Duration,
    margin: Duration,
}

impl ParityError {
    /// The front (client) idle timeout that was checked.
    pub fn front_idle(&self) -> Duration {
        self.front_idle
    }

    /// The backend (server) keep-alive timeout that was checked.
    pub fn backend_keep_alive(&self) -> Duration {
        self.backend_keep_alive
    }

    /// The margin that was checked.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The smallest backend keep-alive that passes: `front_idle + margin`, saturating
    /// at [`Duration::MAX`].
    pub fn required_backend_keep_alive(&self) -> Duration {
        self.front_idle.saturating_add(self.margin)
    }

    /// How much the backend keep-alive falls short of
    /// [`required_backend_keep_alive`](Self::required_backend_keep_alive), which is also
    /// how much the front idle timeout is too long (saturating at [`Duration::MAX`]).
    pub fn shortfall(&self) -> Duration {
        let missing = self.front_idle.as_nanos() + self.margin.as_nanos()
            - self.backend_keep_alive.as_nanos();
        duration_from_nanos(missing)
    }

    /// The largest front idle timeout that passes with this backend keep-alive and
    /// margin: `backend_keep_alive - margin`. `None` when the margin alone exceeds the
    /// backend keep-alive, so no front idle timeout fits.
    pub fn max_front_idle(&self) -> Option<Duration> {
        self.backend_keep_alive.checked_sub(self.margin)
    }
}

impl fmt::Display for ParityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend keep-alive {} is shorter than front idle timeout {} + margin {}: \
             raise the backend keep-alive to at least {}",
            Millis(self.backend_keep_alive),
            Millis(self.front_idle),
            Millis(self.margin),
            Millis(self.required_backend_keep_alive()),
        )?;
        match self.max_front_idle() {
            Some(front) => write!(
                f,
                ", or lower the front idle timeout to at most {}",
                Millis(front)
            ),
            None => write!(
                f,
                " (the margin alone exceeds the backend keep-alive, \
                 so lowering the front idle timeout cannot help)"
            ),
        }
    }
}

impl std::error::Error for ParityError {}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9, which fits in u32.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Shows a duration in milliseconds, with the sub-millisecond part only when there is
/// one: `5000 ms`, `0.25 ms`.
pub(crate) struct Millis(pub(crate) Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let sub_milli = self.0.subsec_nanos() % 1_000_000;
        if sub_milli == 0 {
            write!(f, "{millis} ms")
        } else {
            let fraction = format!("{sub_milli:06}");
            write!(f, "{millis}.{} ms", fraction.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn holds_at_and_above_the_sum() {
        assert_eq!(check_parity(ms(4000), ms(5000), ms(1000)), Ok(()));
        assert_eq!(check_parity(ms(4000), ms(75_000), ms(1000)), Ok(()));
        assert_eq!(check_parity(ms(0), ms(0), ms(0)), Ok(()));
        assert_eq!(check_parity(ms(5000), ms(5000), ms(0)), Ok(()));
    }

    #[test]
    fn failure_says_which_side_to_change_and_by_how_much() {
        let err = check_parity(ms(4500), ms(5000), ms(1000)).unwrap_err();
        assert_eq!(err.shortfall(), ms(500));
        assert_eq!(err.required_backend_keep_alive(), ms(5500));
        assert_eq!(err.max_front_idle(), Some(ms(4000)));
        assert_eq!(err.front_idle(), ms(4500));
        assert_eq!(err.backend_keep_alive(), ms(5000));
        assert_eq!(err.margin(), ms(1000));
        assert_eq!(
            err.to_string(),
            "backend keep-alive 5000 ms is shorter than front idle timeout 4500 ms + \
             margin 1000 ms: raise the backend keep-alive to at least 5500 ms, or lower \
             the front idle timeout to at most 4000 ms"
        );
    }

    #[test]
    fn gunicorn_default_against_a_60s_pool() {
        let err = check_parity(ms(60_000), ms(2000), ms(1000)).unwrap_err();
        assert_eq!(err.shortfall(), ms(59_000));
        assert_eq!(err.max_front_idle(), Some(ms(1000)));
    }

    #[test]
    fn margin_larger_than_backend_leaves_no_front_idle() {
        let err = check_parity(ms(0), ms(500), ms(1000)).unwrap_err();
        assert_eq!(err.max_front_idle(), None);
        assert_eq!(err.shortfall(), ms(500));
        assert!(err
            .to_string()
            .ends_with("lowering the front idle timeout cannot help)"));
        // Equal margin and backend: a zero front idle timeout is the only fit.
        let err = check_parity(ms(1), ms(1000), ms(1000)).unwrap_err();
        assert_eq!(err.max_front_idle(), Some(Duration::ZERO));
    }

    #[test]
    fn huge_values_do_not_panic_or_wrap() {
        let max = Duration::MAX;
        assert_eq!(check_parity(max, max, Duration::ZERO), Ok(()));
        let err = check_parity(max, max, ms(1)).unwrap_err();
        assert_eq!(err.shortfall(), ms(1));
        assert_eq!(err.required_backend_keep_alive(), max);
        assert_eq!(err.max_front_idle(), Some(max - ms(1)));
        let err = check_parity(max, Duration::ZERO, max).unwrap_err();
        assert_eq!(err.shortfall(), max);
        assert_eq!(err.max_front_idle(), None);
        let _ = err.to_string();
    }

    #[test]
    fn sub_millisecond_values_are_shown_exactly() {
        let err = check_parity(Duration::from_micros(4_000_250), ms(5000), ms(1000)).unwrap_err();
        assert!(
            err.to_string().contains("front idle timeout 4000.25 ms"),
            "{err}"
        );
        assert_eq!(err.shortfall(), Duration::from_micros(250));
        assert_eq!(Millis(Duration::from_nanos(1)).to_string(), "0.000001 ms");
    }
}
