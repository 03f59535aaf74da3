//! A TCP forwarder on 127.0.0.1 that counts how often a byte pattern crosses it (e.g.
//! `Action=AssumeRole` on the way to moto), so tests can count API calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running forwarder.
pub struct CountingProxy {
    /// The port it listens on.
    pub port: u16,
    counts: Arc<Mutex<Vec<usize>>>,
    _runtime: tokio::runtime::Runtime,
}

impl CountingProxy {
    /// Forwards 127.0.0.1:PORT to `target_port`, counting `pattern` in client bytes.
    pub fn start(target_port: u16, pattern: &'static [u8]) -> CountingProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts: Arc<Mutex<Vec<usize>>> = Arc::default();
        let shared = counts.clone();
        runtime.spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            while let Ok((mut client, _)) = listener.accept().await {
                let id = next.fetch_add(1, Ordering::SeqCst);
                shared.lock().unwrap().push(0);
                let counts = shared.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await else { return };
                    let (mut cr, mut cw) = client.split();
                    let (mut ur, mut uw) = upstream.split();
                    let up = async {
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 8192];
                        loop {
                            let n = cr.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            seen.extend_from_slice(&buf[..n]);
                            let found = seen.windows(pattern.len()).filter(|w| *w == pattern).count();
                            counts.lock().unwrap()[id] = found;
                            if uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut ur, &mut cw).await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        CountingProxy { port, counts, _runtime: runtime }
    }

    /// How many times the pattern has been seen.
    pub fn count(&self) -> usize {
        self.counts.lock().unwrap().iter().sum()
    }
}
