//! Work repeated on a timer for as long as its owner lives: the rules file and the certificate directory watchers,
//! the proxy's deadline sweepers.

use std::time::Duration;

/// Runs `f` on `owner` every `every` for as long as `owner` lives elsewhere (the task holds it only weakly).
pub fn every<T, F, Fut>(owner: &std::sync::Arc<T>, every: Duration, f: F)
where
    T: Send + Sync + 'static,
    F: Fn(std::sync::Arc<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let me = std::sync::Arc::downgrade(owner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(owner) = me.upgrade() else { return };
            f(owner).await;
        }
    });
}
