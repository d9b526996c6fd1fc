//! tidemark-server: the HTTP API over one ledger.
//!
//! * Writes (`POST /v1/events`) are authenticated by the events' own
//!   signatures and the signers' roles; handlers verify signatures on the
//!   blocking pool, and one writer thread commits concurrent requests
//!   together (group commit), answering each all-or-nothing.
//! * Reads need a bearer token signed by an enrolled, unrevoked key
//!   (`tidemark_core::token`); only `/healthz` is open.
//! * `/metrics` is Prometheus text.
//!
//! The server owns the ledger directory while it runs (sled's lock), and
//! writes `server.json` into it so local writers can be told where to go.

mod metrics;
mod problem;
mod routes;
mod ui;
mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tidemark_core::Timestamp;
use tidemark_store::Ledger;

pub use metrics::Metrics;
pub use routes::{ROUTES, router};

/// Largest request body accepted (a batch of signed events).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most events in one write request (the ledger's batch limit).
pub const MAX_EVENTS_PER_REQUEST: usize = tidemark_store::MAX_BATCH_EVENTS;
/// Largest request head (request line and headers) a connection may send.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A client must finish sending its request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request must be answered within this time, body upload included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Write requests waiting for the writer; further writers wait (backpressure).
pub const WRITE_QUEUE_DEPTH: usize = 256;
/// In-flight requests get this long to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7447";

/// Where a running server can be reached, written to `LEDGER/server.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub pid: u32,
}

pub fn server_info_path(ledger_dir: &Path) -> PathBuf {
    ledger_dir.join("server.json")
}

/// Reads `server.json` when a server claims the ledger.
pub fn read_server_info(ledger_dir: &Path) -> Option<ServerInfo> {
    serde_json::from_str(&std::fs::read_to_string(server_info_path(ledger_dir)).ok()?).ok()
}

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub clock: fn() -> Timestamp,
    /// Normally [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

/// Serves `ledger` until SIGTERM or SIGINT, then drains: in-flight requests
/// finish (up to [`SHUTDOWN_GRACE`]), queued writes are committed, and the
/// ledger is closed. Returns once everything acknowledged is durable.
pub fn serve(ledger: Ledger, options: ServeOptions) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let ledger_dir = ledger.paths().dir.clone();
    let metrics = Arc::new(Metrics::default());
    let (cp, _) = ledger.latest_checkpoint().map_err(std::io::Error::other)?;
    metrics.tree_size.store(cp.size, std::sync::atomic::Ordering::Relaxed);
    metrics.last_checkpoint_micros.store((options.clock)().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    let known: writer::KnownKeys = Arc::new(RwLock::new(ledger.known_keys()));
    let ledger = Arc::new(RwLock::new(ledger));
    let (tx, rx) = std::sync::mpsc::sync_channel(WRITE_QUEUE_DEPTH);
    let writer =
        writer::Writer { ledger: ledger.clone(), metrics: metrics.clone(), known: known.clone(), clock: options.clock };
    let writer_thread = std::thread::Builder::new().name("tidemark-writer".into()).spawn(move || writer.run(rx))?;
    let state = routes::AppState::new(ledger.clone(), tx, metrics, known, options.clock);

    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(options.listen).await?;
        let local = listener.local_addr()?;
        let info = ServerInfo { url: format!("http://{local}"), pid: std::process::id() };
        std::fs::write(server_info_path(&ledger_dir), serde_json::to_string(&info).expect("serialises"))?;
        tracing::info!(url = %info.url, ledger = %ledger_dir.display(), "listening");
        println!("tidemark serving {} on {}", ledger_dir.display(), info.url);
        accept_loop(listener, router(state), options.header_read_timeout).await
    });
    // Cancel whatever outlived the grace period; then every handle on the write
    // queue is gone, and the writer commits what is queued and stops.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    writer_thread.join().map_err(|_| std::io::Error::other("the writer thread panicked"))?;
    let _ = std::fs::remove_file(server_info_path(&ledger_dir));
    drop(ledger);
    tracing::info!("stopped; every acknowledged event is durable");
    result
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(MAX_HEADER_BYTES);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut signal => break,
        }
    }
    drop(listener);
    drop(app);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("grace period over: closing remaining connections"),
    }
    Ok(())
}
