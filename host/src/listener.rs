//! Accept loops that serve a warp filter over HTTPS or plain HTTP.
//!
//! Owns: accepting TCP connections, the TLS handshake (tokio-rustls, with a
//! timeout), serving each connection with hyper's HTTP/1.1 server (with a
//! header read timeout), tagging every request with the peer address, and
//! graceful, bounded shutdown.
//!
//! warp's own server and TLS are deliberately not used: we need the
//! handshake and header timeouts, the peer address and a shutdown we can
//! bound, and rustls configured with the ring provider only.
//!
//! Must never: stop the loop because one connection failed (a failed
//! handshake or a vanished client is logged at debug), or wait on shutdown
//! longer than the grace period the caller gave.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use warp::Filter;

/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after an accept error such as EMFILE before accepting again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The remote peer address, inserted into every request's extensions; read it
/// in a filter with `warp::ext::optional::<PeerAddr>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client certificate a peer presented in the TLS handshake (already
/// verified against the configured client CA by rustls), inserted into the
/// request's extensions when there is one; read it with
/// `warp::ext::optional::<PeerCertificate>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate(pub Arc<rustls_pki_types::CertificateDer<'static>>);

/// Timeouts of a listener's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// How long a client may take to complete the TLS handshake.
    pub handshake: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        ConnectionTimeouts {
            handshake: TLS_HANDSHAKE_TIMEOUT,
            header_read: HEADER_READ_TIMEOUT,
        }
    }
}

/// A running server. Call [`ServerHandle::shutdown`] to stop it; dropping the
/// handle instead stops accepting and aborts open connections at once.
#[derive(Debug)]
#[must_use = "dropping the handle stops the server at once; keep it and call `shutdown`"]
pub struct ServerHandle {
    /// The address the listener is bound to (useful with port 0).
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_loop: JoinHandle<JoinSet<()>>,
}

impl ServerHandle {
    /// Stops accepting, lets in-flight requests finish (bounded: at most
    /// `grace`), then returns. Connections still open after `grace` are
    /// aborted.
    pub async fn shutdown(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        // Receivers may all be gone already; that is fine.
        let _ = self.shutdown.send(true);
        let mut connections = match tokio::time::timeout_at(deadline, self.accept_loop).await {
            Ok(Ok(connections)) => connections,
            Ok(Err(join_error)) => {
                tracing::warn!(addr = %self.local_addr, error = %join_error, "accept loop ended abnormally");
                return;
            }
            Err(_) => {
                tracing::warn!(addr = %self.local_addr, "accept loop did not stop within the grace period");
                return;
            }
        };
        let open = connections.len();
        let drained = tokio::time::timeout_at(deadline, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        match drained {
            Ok(()) => tracing::debug!(addr = %self.local_addr, open, "server stopped"),
            Err(_) => {
                tracing::warn!(
                    addr = %self.local_addr,
                    still_open = connections.len(),
                    grace_ms = grace.as_millis() as u64,
                    "connections still open after the grace period were aborted"
                );
                connections.abort_all();
            }
        }
    }
}

/// Serves `filter` over HTTPS on `listener`: an accept loop with a TLS
/// handshake timeout (10 s), one task per connection, a header read timeout
/// (30 s) and graceful shutdown through the returned handle.
pub async fn serve_https<F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    filter: F,
) -> ServerHandle
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    serve_https_with(listener, tls, filter, ConnectionTimeouts::default()).await
}

/// [`serve_https`] with the given timeouts. A client certificate the peer
/// presented is passed to every request as a [`PeerCertificate`].
pub async fn serve_https_with<F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    filter: F,
    timeouts: ConnectionTimeouts,
) -> ServerHandle
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let acceptor = TlsAcceptor::from(tls);
    spawn_accept_loop(listener, "https", filter, timeouts, move |tcp, peer| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|c| PeerCertificate(Arc::new(c.clone().into_owned())));
                    Some((stream, cert))
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, timeout_secs = timeouts.handshake.as_secs(), "TLS handshake timed out");
                    None
                }
            }
        }
    })
}

/// Serves `filter` over plain HTTP on `listener` (for the loopback local API
/// only): the same loop as [`serve_https`] without TLS.
pub async fn serve_http<F>(listener: TcpListener, filter: F) -> ServerHandle
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    spawn_accept_loop(
        listener,
        "http",
        filter,
        ConnectionTimeouts::default(),
        |tcp, _peer| async move { Some((tcp, None)) },
    )
}

/// The shared accept loop. `handshake` turns a TCP stream into the stream
/// HTTP is spoken over (TLS or not); `None` drops the connection.
fn spawn_accept_loop<F, H, HF, S>(
    listener: TcpListener,
    scheme: &'static str,
    filter: F,
    timeouts: ConnectionTimeouts,
    handshake: H,
) -> ServerHandle
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
    H: Fn(TcpStream, SocketAddr) -> HF + Send + 'static,
    HF: Future<Output = Option<(S, Option<PeerCertificate>)>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A listener whose address cannot be read is unusable anyway; report
    // the unspecified address rather than panicking.
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let accept_loop = tokio::spawn(accept_loop(
        listener,
        local_addr,
        scheme,
        filter,
        timeouts,
        handshake,
        shutdown_rx,
    ));
    tracing::info!(addr = %local_addr, scheme, "listening");
    ServerHandle {
        local_addr,
        shutdown: shutdown_tx,
        accept_loop,
    }
}

async fn accept_loop<F, H, HF, S>(
    listener: TcpListener,
    local_addr: SocketAddr,
    scheme: &'static str,
    filter: F,
    timeouts: ConnectionTimeouts,
    handshake: H,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()>
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
    H: Fn(TcpStream, SocketAddr) -> HF + Send + 'static,
    HF: Future<Output = Option<(S, Option<PeerCertificate>)>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set does not grow forever.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) if is_per_connection_error(&error) => {
                tracing::debug!(addr = %local_addr, %error, "connection failed before it was accepted");
                continue;
            }
            Err(error) => {
                // EMFILE/ENFILE and the like: wait for descriptors to free up.
                tracing::warn!(addr = %local_addr, %error, backoff_ms = ACCEPT_ERROR_BACKOFF.as_millis() as u64, "accept failed; retrying");
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let io = handshake(tcp, peer);
        let filter = filter.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(io, peer, scheme, filter, timeouts, shutdown).await;
        });
    }
    drop(listener);
    tracing::debug!(addr = %local_addr, open = connections.len(), "stopped accepting");
    connections
}

/// Serves one connection until the client is done or shutdown is signalled
/// (then in-flight requests finish and the connection closes).
async fn serve_connection<F, HF, S>(
    handshake: HF,
    peer: SocketAddr,
    scheme: &'static str,
    filter: F,
    timeouts: ConnectionTimeouts,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
    HF: Future<Output = Option<(S, Option<PeerCertificate>)>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stream, cert) = tokio::select! {
        _ = shutdown.changed() => return,
        stream = handshake => match stream {
            Some(pair) => pair,
            None => return,
        },
    };

    let warp_service = TowerToHyperService::new(warp::service(filter));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        if let Some(cert) = &cert {
            request.extensions_mut().insert(cert.clone());
        }
        hyper::service::Service::call(&warp_service, request)
    });

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);

    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, scheme, %error, "connection ended with an error");
    }
}

/// Errors from `accept` that concern one would-be connection, not the listener.
fn is_per_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter that answers `peer=<addr> body=<body>` to `POST /echo`, and
    /// sleeps the number of milliseconds in the path for `GET /slow/<ms>`.
    fn test_filter() -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection>
    + Clone
    + Send
    + Sync
    + 'static {
        let echo = warp::post()
            .and(warp::path("echo"))
            .and(warp::ext::optional::<PeerAddr>())
            .and(warp::body::bytes())
            .map(|peer: Option<PeerAddr>, body: bytes::Bytes| {
                let peer = peer.map(|p| p.0.to_string()).unwrap_or_default();
                format!("peer={peer} body={}", String::from_utf8_lossy(&body))
            });
        let slow = warp::get()
            .and(warp::path!("slow" / u64))
            .then(|ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "slow done"
            });
        echo.or(slow)
    }

    async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn plain_http_serves_the_filter_with_the_peer_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = serve_http(listener, test_filter()).await;
        let addr = server.local_addr;
        let reply = tokio::time::timeout(Duration::from_secs(10), async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = TcpStream::connect(addr).await?;
            let local = stream.local_addr()?;
            stream
                .write_all(
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                )
                .await?;
            let mut out = String::new();
            stream.read_to_string(&mut out).await?;
            std::io::Result::Ok((local, out))
        })
        .await
        .expect("bounded")
        .expect("request");
        let (local, out) = reply;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains(&format!("peer={local} body=hello")), "{out}");
        server.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn shutdown_is_bounded_by_the_grace_period_while_a_slow_request_runs() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = serve_http(listener, test_filter()).await;
        let addr = server.local_addr;
        let slow = tokio::spawn(async move { http_get(addr, "/slow/30000").await });
        // Let the request reach the handler.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            server.shutdown(Duration::from_millis(300)),
        )
        .await
        .expect("shutdown must return within the grace period");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        // The aborted connection is closed: the client sees the end, not a hang.
        let result = tokio::time::timeout(Duration::from_secs(5), slow)
            .await
            .expect("client bounded")
            .expect("join");
        if let Ok(out) = result {
            assert!(!out.contains("slow done"), "{out}");
        }
        // And nothing listens any more.
        let reconnect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .expect("bounded");
        assert!(reconnect.is_err(), "the listener must be closed");
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish_within_the_grace_period() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = serve_http(listener, test_filter()).await;
        let addr = server.local_addr;
        let slow = tokio::spawn(async move { http_get(addr, "/slow/300").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::time::timeout(
            Duration::from_secs(10),
            server.shutdown(Duration::from_secs(5)),
        )
        .await
        .expect("bounded");
        let out = tokio::time::timeout(Duration::from_secs(5), slow)
            .await
            .expect("bounded")
            .expect("join")
            .expect("request");
        assert!(out.contains("slow done"), "{out}");
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_does_not_stop_the_loop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let generated = crate::tls::generate_ca_and_server(dir.path(), "t", &[]).expect("tls");
        let config = crate::tls::server_config(&generated.server_cert, &generated.server_key)
            .expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = serve_https(listener, config, test_filter()).await;
        // Plain HTTP on the TLS port: the handshake fails, the loop goes on.
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            http_get(server.local_addr, "/slow/0"),
        )
        .await
        .expect("bounded");
        assert!(!out.unwrap_or_default().contains("slow done"));
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            http_get(server.local_addr, "/slow/0"),
        )
        .await
        .expect("bounded");
        assert!(!out.unwrap_or_default().contains("slow done"));
        // A TCP connect still succeeds: the listener is alive.
        TcpStream::connect(server.local_addr)
            .await
            .expect("still accepting");
        server.shutdown(Duration::from_secs(1)).await;
    }
}
