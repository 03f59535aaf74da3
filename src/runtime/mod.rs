//! What every long-running process of Portcullis shares, operator and proxy alike: the admin
//! HTTP endpoint and the termination signals.

pub mod admin;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The connection an `accept()` returned, or `None` after a short back-off when it failed (out
/// of file descriptors and similar), so an accept loop does not spin.
pub async fn accepted(result: std::io::Result<(TcpStream, SocketAddr)>) -> Option<(TcpStream, SocketAddr)> {
    match result {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

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
