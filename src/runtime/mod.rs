//! What every long-running process of Portcullis shares, operator and proxy alike: the admin
//! HTTP endpoint and the termination signals.

pub mod admin;

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
