//! The public listener: one single-threaded event loop per thread, all
//! accepting from the same listening socket, each connection served by
//! hyper's HTTP/1 server.
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
//! Why not `axum::serve`: a request under a gateway route goes straight to
//! the gateway ([`App`]), not through the router, its extensions and
//! its boxed services, which measured 5-7% of the gateway's CPU
//! per request. Route paths cannot shadow the authorization server's own
//! (the configuration reserves them), so the split changes no answer.
//!
//! Every connection has hyper's header-read timeout
//! (`limits.header_read_timeout`): otherwise a client that opens connections
//! and never finishes a request head, or keeps them open idle, would hold
//! them, and their file descriptors, for ever.
//!
//! The loops outlive their listener: a database connection opened while
//! serving a request belongs to that thread's event loop, and the server's
//! last audit batch may still go through it, so each loop keeps running
//! until the server has closed its store ([`PublicListener::release`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use mandate_gateway::Gateway;
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

use crate::StartError;

/// Period of each loop's idle timer (see `serve`).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);

/// How the public listener serves connections.
pub(crate) struct ConnectionLimits {
    /// Event loops (threads).
    pub(crate) threads: usize,
    /// Longest wait for a request's head, on a new connection and between
    /// requests on a kept-alive one; then the connection is closed.
    pub(crate) header_read_timeout: Duration,
}

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
    /// Binds `addr` and serves `app` on `limits.threads` event loops until
    /// `stop` turns true (or its sender is dropped).
    pub(crate) fn start(
        addr: SocketAddr,
        app: App,
        limits: ConnectionLimits,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, StartError> {
        let ConnectionLimits {
            threads,
            header_read_timeout,
        } = limits;
        let http = http1_server(header_read_timeout);
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
            let serve = serve(
                socket,
                app.clone(),
                http.clone(),
                stop.clone(),
                released.clone(),
                done,
            );
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

/// What a listener answers: requests under a gateway route go to the
/// gateway (the public listener's only), everything else to the router
/// (whose fallback also reaches the gateway, for its well-known documents).
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) router: Router,
    pub(crate) gateway: Option<Arc<Gateway>>,
}

impl App {
    async fn answer(self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let mut req = req.map(Body::new);
        if let Some(gateway) = &self.gateway {
            req = match gateway.handle_routed(req, Some(peer)).await {
                Ok(response) => return response,
                Err(not_routed) => not_routed,
            };
        }
        req.extensions_mut().insert(ConnectInfo(peer));
        match self.router.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// One event loop: serve until stopped, say so, then keep the loop's
/// resources alive until released.
async fn serve(
    socket: std::net::TcpListener,
    app: App,
    http: http1::Builder,
    stop: watch::Receiver<bool>,
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
        Ok(listener) => accept_until_stopped(listener, app, http, stop).await,
        Err(e) => tracing::error!(error = %e, "public listener could not join its event loop"),
    }
    heartbeat.abort();
    let _ = done.send(());
    // Returns when the sender is dropped.
    let _ = released.changed().await;
}

/// hyper's HTTP/1 server as every listener uses it: a connection that does
/// not finish a request head within `header_read_timeout` (on a new
/// connection, or between requests on a kept-alive one) is closed. hyper's
/// own timer is armed only while a head is awaited.
pub(crate) fn http1_server(header_read_timeout: Duration) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    http
}

/// Accepts and serves connections on the current runtime until `stop`
/// turns true (or its sender is dropped), then returns once every
/// connection has finished its request in flight.
pub(crate) async fn accept_until_stopped(
    listener: tokio::net::TcpListener,
    app: App,
    http: http1::Builder,
    mut stop: watch::Receiver<bool>,
) {
    // Dropped when the loop stops accepting: every connection sees it and
    // finishes gracefully. Each connection holds a clone of `open`, so
    // `closing.closed()` resolves when the last one ends.
    let (draining, drain) = watch::channel(());
    let (closing, open) = watch::channel(());
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(&e).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        // No Nagle delay on answers (nginx's `tcp_nodelay on` default).
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            tcp,
            peer,
            app.clone(),
            http.clone(),
            drain.clone(),
            open.clone(),
        ));
    }
    drop(listener);
    drop(draining);
    drop(open);
    closing.closed().await;
}

/// Serves one connection until it ends, or, once `drain` closes, until its
/// request in flight is answered.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: App,
    http: http1::Builder,
    mut drain: watch::Receiver<()>,
    open: watch::Receiver<()>,
) {
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.answer(req, peer).await) }
    });
    let connection = http.serve_connection(TokioIo::new(tcp), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = drain.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
    drop(open);
}

/// After a failed `accept`: go on at once when only that connection failed,
/// otherwise (out of file descriptors, say) wait a second, as `axum::serve`
/// and hyper's examples do, rather than spin.
async fn pause_after(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
