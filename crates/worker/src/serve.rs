//! The HTTP server's connection handling: a bound on open connections and a
//! deadline on every request head, so silent, slow or abandoned clients
//! cannot hold sockets (or file descriptors) forever.
//!
//! `axum::serve` sets no timer, so hyper's header read timeout never ran and
//! a client that connected and said nothing kept its connection open
//! indefinitely. Here each connection is served by hyper's HTTP/1 server
//! with a tokio timer: the deadline starts whenever the server waits for a
//! request head — right after accepting, and again after each response on a
//! kept-alive connection — so it bounds both an unfinished request and an
//! idle keep-alive connection.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Limits of the HTTP server (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client has to send a request's head, counted from the
    /// moment the server waits for it (also between requests on a kept-alive
    /// connection); then the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown`, then lets the open
/// connections finish their current request (at most `drain` long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // A permit first: at the bound, new clients wait in the backlog
        // rather than being accepted and left unserved.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: a pause, not a stop.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        let header_read_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "http connection closed with an error");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Reads until the server closes the connection; panics if it is still
    /// open after `within`.
    fn closed_by_server(stream: &mut std::net::TcpStream, within: Duration) {
        stream.set_read_timeout(Some(within)).expect("timeout");
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                // A 408 or similar before the close is fine.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("connection still open after {within:?}: {e}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_unfinished_and_idle_connections_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 1000,
        };
        let server = tokio::spawn(serve(
            listener,
            router,
            limits,
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        let checked = tokio::task::spawn_blocking(move || {
            // Silent clients, one that never finishes its head, and one
            // that is idle after a served request on a kept-alive connection.
            let mut silent: Vec<_> = (0..200)
                .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
                .collect();
            let mut unfinished = std::net::TcpStream::connect(addr).expect("connect");
            unfinished
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            let mut idle = std::net::TcpStream::connect(addr).expect("connect");
            idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut answer = [0u8; 256];
            idle.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let n = idle.read(&mut answer).expect("served");
            assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
            for s in silent.iter_mut() {
                closed_by_server(s, Duration::from_secs(10));
            }
            closed_by_server(&mut unfinished, Duration::from_secs(10));
            closed_by_server(&mut idle, Duration::from_secs(10));
        })
        .await;
        shutdown.cancel();
        let _ = server.await;
        checked.expect("every connection was closed by the server");
    }
}
