//! Timing the server's close: the connection task records the instant hyper saw the
//! connection end, and the probe waits for it, up to `max_wait`.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long to wait for hyper to shut the connection down once the probe gives up
/// waiting for the server, before the connection task is aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The spawned connection task: its result and the instant it ended.
pub(super) type Driver<E> = JoinHandle<(Result<(), E>, Instant)>;

/// Drives `connection` on its own task. The task records when the connection ended:
/// that instant, not the moment the probe happens to be polled again, is the server's
/// close.
pub(super) fn spawn_driver<F, E>(connection: F) -> Driver<E>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    tokio::spawn(async move {
        let result = connection.await;
        (result, Instant::now())
    })
}

/// How long after `drained_at` the connection ended, waiting at most `max_wait`;
/// `None` when it was still open then. The caller keeps the request sender alive
/// meanwhile: dropping it would make hyper close the idle connection itself.
pub(super) async fn wait_for_close<E: std::fmt::Display>(
    driver: &mut Driver<E>,
    drained_at: Instant,
    max_wait: Duration,
) -> Option<Duration> {
    match tokio::time::timeout(max_wait, driver).await {
        Ok(Ok((result, closed_at))) => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "probed connection ended with an error");
            }
            Some(whole_millis(
                closed_at.saturating_duration_since(drained_at),
            ))
        }
        Ok(Err(join_error)) => {
            tracing::debug!(error = %join_error, "probe connection task failed");
            Some(whole_millis(
                Instant::now().saturating_duration_since(drained_at),
            ))
        }
        Err(_) => None,
    }
}

/// Lets hyper close a connection the server left open (the request sender must be
/// dropped first), and aborts the task if that takes longer than [`SHUTDOWN_GRACE`].
pub(super) async fn shut_down<E>(driver: &mut Driver<E>) {
    if !driver.is_finished()
        && tokio::time::timeout(SHUTDOWN_GRACE, &mut *driver)
            .await
            .is_err()
    {
        driver.abort();
    }
}

/// Rounds down to whole milliseconds: finer digits of a measurement over the network
/// are noise, and rounding down errs on the safe side.
fn whole_millis(measured: Duration) -> Duration {
    Duration::from_millis(u64::try_from(measured.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_round_down_to_whole_milliseconds() {
        assert_eq!(
            whole_millis(Duration::from_micros(4_999_999)),
            Duration::from_millis(4_999)
        );
        assert_eq!(whole_millis(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            whole_millis(Duration::MAX),
            Duration::from_millis(u64::MAX),
            "saturates instead of panicking"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_close_is_timed_from_when_the_task_ended() {
        let drained_at = Instant::now();
        let mut driver = spawn_driver(async {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            Ok::<(), std::io::Error>(())
        });
        let measured = wait_for_close(&mut driver, drained_at, Duration::from_secs(60)).await;
        assert_eq!(measured, Some(Duration::from_millis(2_500)));

        let mut open = spawn_driver(std::future::pending::<Result<(), std::io::Error>>());
        let measured = wait_for_close(&mut open, Instant::now(), Duration::from_secs(5)).await;
        assert_eq!(measured, None, "still open after max_wait");
        shut_down(&mut open).await;
        assert!(
            open.await.unwrap_err().is_cancelled(),
            "aborted after the grace"
        );
    }
}
