//! The public listener: one single-threaded event loop per thread, all
//! accepting from the same listening socket.
//!
//! Why not the process's multi-threaded runtime: a gateway request does
//! little work of its own next to moving bytes, and a work-stealing runtime
//! moves tasks between threads and wakes idle ones to steal, which on a
//! small machine under load cost more than the gateway's checks
//! (docs/BENCHMARKS.md). Here each thread owns the connections it accepted
//! and serves them to the end; the kernel hands a new connection to a loop
//! that is waiting in `accept`, so an idle thread takes the next one. With
//! the gateway's per-thread upstream pools (`mandate_gateway::upstream`), a
//! proxied request, its upstream connection and its answer stay on one
//! thread. nginx's worker processes follow the same plan.
//!
//! The loops outlive their listener: a database connection opened while
//! serving a request belongs to that thread's event loop, and the server's
//! last audit batch may still go through it, so each loop keeps running
//! until the server has closed its store ([`PublicListener::release`]).

use std::net::SocketAddr;

use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::StartError;

/// Period of each loop's idle timer (see `serve`).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);

/// The running event loops of the public listener.
pub(crate) struct PublicListener {
    /// Where it is bound.
    pub(crate) addr: SocketAddr,
    /// Resolves once every loop has stopped accepting and finished its
    /// connections (after the stop signal).
    pub(crate) stopped: JoinHandle<()>,
    /// Dropped to let the loops end.
    release: watch::Sender<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl PublicListener {
    /// Binds `addr` and serves `app` on `threads` event loops until `stop`
    /// turns true (or its sender is dropped).
    pub(crate) fn start(
        addr: SocketAddr,
        app: Router,
        threads: usize,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, StartError> {
        let bind_error = |source| StartError::Bind { addr, source };
        let socket = listen(addr).map_err(bind_error)?;
        let bound = socket.local_addr().map_err(bind_error)?;
        let (release, released) = watch::channel(());
        let mut loops = Vec::with_capacity(threads);
        let mut dones = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let socket = socket.try_clone().map_err(bind_error)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::Threads)?;
            let (done, finished) = oneshot::channel();
            dones.push(finished);
            let serve = serve(socket, app.clone(), stop.clone(), released.clone(), done);
            let thread = std::thread::Builder::new()
                .name(format!("mandate-http-{i}"))
                .spawn(move || runtime.block_on(serve))
                .map_err(StartError::Threads)?;
            loops.push(thread);
        }
        let stopped = tokio::spawn(async move {
            for finished in dones {
                let _ = finished.await;
            }
        });
        Ok(Self {
            addr: bound,
            stopped,
            release,
            threads: loops,
        })
    }

    /// Lets the event loops end, once nothing else needs them (the store is
    /// closed), and waits for their threads.
    pub(crate) async fn release(self) {
        let Self {
            release, threads, ..
        } = self;
        drop(release);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// A non-blocking listening socket on `addr`, set up as `tokio`'s own
/// `TcpListener::bind` does (`SO_REUSEADDR` off Windows, a backlog of 1024
/// rather than `std`'s smaller default), then released from this runtime so
/// that each loop can register its own clone.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// One event loop: serve until stopped, say so, then keep the loop's
/// resources alive until released.
async fn serve(
    socket: std::net::TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    mut released: watch::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    // A timer due within the second keeps tokio's next wake-up close, so
    // registering a request's upstream deadline (seconds away) never makes
    // the loop re-arm its wait: an eventfd write and one more wake-up that
    // about a third of requests paid at one connection (docs/BENCHMARKS.md).
    let heartbeat = tokio::spawn(async {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
        }
    });
    match tokio::net::TcpListener::from_std(socket) {
        Ok(listener) => {
            // No Nagle delay on answers (nginx's `tcp_nodelay on` default).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "public listener failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "public listener could not join its event loop"),
    }
    heartbeat.abort();
    let _ = done.send(());
    // Returns when the sender is dropped.
    let _ = released.changed().await;
}
