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
//! Why connections are handed between loops: a loop woken by a new
//! connection takes every connection waiting in the backlog, so a client
//! that opens its connections in a burst (a pooling load balancer, wrk)
//! could land them all on one loop while the other threads idle. In the
//! gateway benchmark four runs in ten served all 32 connections from one
//! thread, at 10-20% fewer requests a second (docs/BENCHMARKS.md). So each
//! accepted connection goes to the loop serving the fewest, the accepting
//! one on a tie, as Envoy's "exact balance" does ([`Seat`]). Handing one
//! over costs two `epoll_ctl` calls and a wake-up, once per connection.
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
use std::sync::atomic::{AtomicUsize, Ordering};
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
use tokio::sync::{mpsc, oneshot, watch};
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
        for (i, seat) in Seat::all(threads.max(1)).into_iter().enumerate() {
            let socket = socket.try_clone().map_err(bind_error)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::Threads)?;
            let (done, finished) = oneshot::channel();
            dones.push(finished);
            let serve = serve(
                socket,
                seat,
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
    seat: Seat,
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
        Ok(listener) => accept_until_stopped(listener, Some(seat), app, http, stop).await,
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
/// connection has finished its request in flight. With a `seat`, this loop
/// is one of several accepting from the same socket: a connection goes to
/// whichever of them serves the fewest, and this loop also serves those the
/// others hand it.
pub(crate) async fn accept_until_stopped(
    listener: tokio::net::TcpListener,
    mut seat: Option<Seat>,
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
    let serve = |connection: Connection| {
        tokio::spawn(serve_connection(
            connection,
            app.clone(),
            http.clone(),
            drain.clone(),
            open.clone(),
        ));
    };
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(&e).await;
                    continue;
                }
            },
            handed = handed_over(&mut seat) => {
                if let Some(connection) = handed.adopt() {
                    serve(connection);
                }
                continue;
            }
            () = &mut stopped => break,
        };
        // No Nagle delay on answers (nginx's `tcp_nodelay on` default).
        let _ = tcp.set_nodelay(true);
        let connection = match &seat {
            None => Connection {
                tcp,
                peer,
                counted: None,
            },
            Some(seat) => match seat.place(tcp, peer) {
                Some(connection) => connection,
                None => continue,
            },
        };
        serve(connection);
    }
    drop(listener);
    // Connections handed to this loop while it was stopping are served
    // (and drained) like its own; none can arrive after `close`.
    if let Some(mut seat) = seat {
        seat.inbox.close();
        while let Ok(handed) = seat.inbox.try_recv() {
            if let Some(connection) = handed.adopt() {
                serve(connection);
            }
        }
    }
    drop(draining);
    drop(open);
    closing.closed().await;
}

/// An accepted connection, about to be served on this loop.
struct Connection {
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    /// Counts it as open on this loop until it ends (with a [`Seat`]).
    counted: Option<Counted>,
}

/// A connection accepted by one loop for another, with the count already
/// taken on the other (so that a burst is dealt out one by one).
struct HandedOver {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    counted: Counted,
}

impl HandedOver {
    /// Registers the connection with this loop's reactor.
    fn adopt(self) -> Option<Connection> {
        match tokio::net::TcpStream::from_std(self.tcp) {
            Ok(tcp) => Some(Connection {
                tcp,
                peer: self.peer,
                counted: Some(self.counted),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "a connection handed over could not join its event loop");
                None
            }
        }
    }
}

/// Waits for a connection another loop hands over; never, without a seat.
async fn handed_over(seat: &mut Option<Seat>) -> HandedOver {
    match seat {
        Some(seat) => match seat.inbox.recv().await {
            Some(handed) => handed,
            // Every loop holds the senders while it has a seat.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// One event loop as the others see it: how many connections it serves,
/// and where to hand it one.
struct EventLoop {
    open: AtomicUsize,
    inbox: mpsc::UnboundedSender<HandedOver>,
}

/// One loop's place among the loops that accept from the same socket.
pub(crate) struct Seat {
    loops: Arc<[Arc<EventLoop>]>,
    this: Arc<EventLoop>,
    inbox: mpsc::UnboundedReceiver<HandedOver>,
}

impl Seat {
    /// A seat for each of `count` event loops.
    fn all(count: usize) -> Vec<Seat> {
        let (loops, inboxes): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| {
                let (inbox, receiver) = mpsc::unbounded_channel();
                let open = AtomicUsize::new(0);
                (Arc::new(EventLoop { open, inbox }), receiver)
            })
            .unzip();
        let loops: Arc<[Arc<EventLoop>]> = loops.into();
        loops
            .iter()
            .zip(inboxes)
            .map(|(this, inbox)| Seat {
                loops: Arc::clone(&loops),
                this: Arc::clone(this),
                inbox,
            })
            .collect()
    }

    /// The loop that should serve the next connection: the one serving the
    /// fewest, this one on a tie. The connection counts there from now on.
    fn assign(&self) -> Counted {
        let mut chosen = &self.this;
        let mut fewest = chosen.open.load(Ordering::Relaxed);
        for candidate in self.loops.iter() {
            let open = candidate.open.load(Ordering::Relaxed);
            if open < fewest {
                chosen = candidate;
                fewest = open;
            }
        }
        Counted::on(chosen)
    }

    /// Places a connection this loop accepted: returns it to be served
    /// here, or hands it to the loop that serves fewer.
    fn place(&self, tcp: tokio::net::TcpStream, peer: SocketAddr) -> Option<Connection> {
        let counted = self.assign();
        if Arc::ptr_eq(&counted.on, &self.this) {
            return Some(Connection {
                tcp,
                peer,
                counted: Some(counted),
            });
        }
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "a connection could not leave its event loop");
                return None;
            }
        };
        let to = Arc::clone(&counted.on);
        match to.inbox.send(HandedOver { tcp, peer, counted }) {
            Ok(()) => None,
            // That loop has stopped: this one serves the connection.
            Err(mpsc::error::SendError(handed)) => HandedOver {
                counted: Counted::on(&self.this),
                ..handed
            }
            .adopt(),
        }
    }
}

/// One connection counted as open on one loop, until dropped.
struct Counted {
    on: Arc<EventLoop>,
}

impl Counted {
    fn on(event_loop: &Arc<EventLoop>) -> Self {
        event_loop.open.fetch_add(1, Ordering::Relaxed);
        Self {
            on: Arc::clone(event_loop),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.on.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection until it ends, or, once `drain` closes, until its
/// request in flight is answered.
async fn serve_connection(
    connection: Connection,
    app: App,
    http: http1::Builder,
    mut drain: watch::Receiver<()>,
    open: watch::Receiver<()>,
) {
    let Connection { tcp, peer, counted } = connection;
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
    drop(counted);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The loop a connection lands on, from the thread that answers on it.
    async fn answering_thread(tcp: &mut tokio::net::TcpStream) -> String {
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        while !answer.ends_with(b"!") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8(answer).unwrap();
        let body = answer.rsplit("\r\n\r\n").next().unwrap();
        body.trim_end_matches('!').to_owned()
    }

    #[tokio::test]
    async fn a_burst_of_connections_is_spread_evenly_over_the_loops() {
        let router = Router::new().route(
            "/",
            axum::routing::get(|| async {
                format!("{}!", std::thread::current().name().unwrap_or("?"))
            }),
        );
        let (stop, stopped) = watch::channel(false);
        let mut listener = PublicListener::start(
            "127.0.0.1:0".parse().unwrap(),
            App {
                router,
                gateway: None,
            },
            ConnectionLimits {
                threads: 2,
                header_read_timeout: Duration::from_secs(5),
            },
            stopped,
        )
        .unwrap();
        // Open all of them before using any, as a pooling client does: the
        // first loop to wake would otherwise take the whole backlog.
        let mut connections = Vec::new();
        for _ in 0..32 {
            connections.push(tokio::net::TcpStream::connect(listener.addr).await.unwrap());
        }
        let mut per_loop = std::collections::BTreeMap::<String, usize>::new();
        for tcp in &mut connections {
            *per_loop.entry(answering_thread(tcp).await).or_default() += 1;
        }
        let counts: Vec<usize> = per_loop.values().copied().collect();
        assert_eq!(per_loop.len(), 2, "{per_loop:?}");
        assert!(counts[0].abs_diff(counts[1]) <= 2, "{per_loop:?}");

        stop.send(true).unwrap();
        drop(connections);
        (&mut listener.stopped).await.unwrap();
        listener.release().await;
    }

    #[test]
    fn connections_go_to_the_loop_serving_fewest_and_leave_it_when_they_end() {
        let seats = Seat::all(3);
        let on = |c: &Counted| {
            seats
                .iter()
                .position(|seat| Arc::ptr_eq(&seat.this, &c.on))
                .unwrap()
        };
        let loops = |counted: &[Counted]| counted.iter().map(on).collect::<Vec<_>>();
        // A burst accepted by loop 1 is dealt out, loop 1 first on a tie.
        let mut counted: Vec<Counted> = (0..6).map(|_| seats[1].assign()).collect();
        assert_eq!(loops(&counted), [1, 0, 2, 1, 0, 2]);
        // Both connections on loop 0 end: the next two go there, whoever
        // accepts them; then every loop serves two, and a tie stays put.
        counted.retain(|c| on(c) != 0);
        let more: Vec<Counted> = (0..3).map(|_| seats[2].assign()).collect();
        assert_eq!(loops(&more), [0, 0, 2]);
        drop(more);
        assert_eq!(on(&seats[2].assign()), 0);
    }
}
