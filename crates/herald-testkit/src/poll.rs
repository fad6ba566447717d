//! Polling with a deadline instead of sleeping.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// Polls `check` every `every` until it returns `Some`, or gives up after `timeout`.
///
/// # Errors
/// `Err(())` when `timeout` passed without `Some`.
pub async fn try_poll_until<T, F, Fut>(
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `check` every `every` until it returns `Some`, or panics after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, every: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_poll_until(timeout, every, check)
        .await
        .unwrap_or_else(|()| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// [`poll_until`] every 20 ms.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(timeout, Duration::from_millis(20), what, check).await
}
