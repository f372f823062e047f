//! Where the manager's servers listen and who may reach them. An endpoint is a TCP
//! address or `unix:PATH` (a socket created 0600, or 0660 for `--socket-group`, the
//! local default for operators). Server TLS and mTLS (rustls; certificate, key, and
//! client CA as cocos names them: MANAGER_GRPC_SERVER_CERT / _SERVER_KEY /
//! _CLIENT_CA_CERTS) apply to HTTP and gRPC alike. A TCP address that is not loopback
//! is refused without TLS unless `--insecure-listen` says otherwise (logged loudly).
//! The HTTP server takes at most `--max-connections` at once, gives a TLS handshake and
//! a request's headers 10 s each, and a request body 10 s ([`read_body_within`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// How long a TLS handshake, a request's headers, or its body may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body the HTTP API reads.
pub const MAX_BODY: usize = 1 << 20;

/// A listening endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// host:port.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// Parses `host:port`, `unix:PATH` or `off`.
pub fn parse(s: &str) -> Result<Option<Endpoint>, String> {
    if s == "off" {
        return Ok(None);
    }
    if let Some(p) = s.strip_prefix("unix:") {
        if !p.starts_with('/') {
            return Err(format!(
                "{s:?}: a Unix socket needs an absolute path (unix:/run/cocos/manager.sock)"
            ));
        }
        return Ok(Some(Endpoint::Unix(PathBuf::from(p))));
    }
    s.parse()
        .map(|a| Some(Endpoint::Tcp(a)))
        .map_err(|_| format!("{s:?}: expected host:port (e.g. 127.0.0.1:7001), unix:/path, or off"))
}

/// Refuses to expose an API beyond this host without TLS, unless told to.
pub fn check_exposure(what: &str, ep: &Endpoint, tls: bool, insecure: bool) -> Result<(), String> {
    match ep {
        Endpoint::Tcp(a) if !a.ip().is_loopback() && !tls => {
            if insecure {
                tracing::warn!("INSECURE: the {what} API listens on {a} without TLS (--insecure-listen): anyone who can reach {a} can launch and stop VMs");
                Ok(())
            } else {
                Err(format!("the {what} API would listen on {a}, reachable beyond this host, without TLS: give --tls-cert and --tls-key (and --tls-client-ca for mTLS), listen on loopback or unix:/path, or pass --insecure-listen"))
            }
        }
        _ => Ok(()),
    }
}

/// The listeners settled from the configuration before anything starts.
#[derive(Debug)]
pub struct Plan {
    /// The HTTP endpoint.
    pub http: Option<Endpoint>,
    /// The gRPC endpoint.
    pub grpc: Option<Endpoint>,
    /// Server TLS for both.
    pub tls: Option<ServerTls>,
    /// The group of unix: sockets.
    pub group: Option<u32>,
}

impl Plan {
    /// Parses the endpoints, loads TLS, and refuses exposure without TLS.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self, String> {
        let tls = server_tls(
            cfg.tls_cert.as_deref(),
            cfg.tls_key.as_deref(),
            cfg.tls_client_ca.as_deref(),
        )?;
        let group = cfg.socket_group.as_deref().map(group_id).transpose()?;
        let http = parse(&cfg.http_endpoint())?;
        let grpc = parse(&cfg.grpc_endpoint())?;
        for (what, ep) in [("HTTP", &http), ("gRPC", &grpc)] {
            if let Some(ep) = ep {
                check_exposure(what, ep, tls.is_some(), cfg.insecure_listen)?;
            }
        }
        Ok(Plan {
            http,
            grpc,
            tls,
            group,
        })
    }
}

/// Server TLS for both APIs.
#[derive(Clone)]
pub struct ServerTls {
    /// For the HTTP server.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// For the gRPC server.
    pub tonic: tonic::transport::ServerTlsConfig,
    /// Client certificates are required.
    pub mtls: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

fn read(p: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
}

/// Loads the server certificate chain and key (PEM), and a client CA for mTLS.
pub fn server_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Option<ServerTls>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (cert, key) {
        (None, None) if client_ca.is_none() => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(
                "TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)"
                    .into(),
            )
        }
    };
    let cert_pem = read(cert, "--tls-cert")?;
    let key_pem = read(key, "--tls-key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: no PEM certificate", cert.display()));
    }
    let pkey = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut tonic_cfg = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem));
    let (config, mtls) = match client_ca {
        Some(ca) => {
            let ca_pem = read(ca, "--tls-client-ca")?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca_pem) {
                let c = c.map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--tls-client-ca {}: no PEM certificate",
                    ca.display()
                ));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            tonic_cfg = tonic_cfg.client_ca_root(tonic::transport::Certificate::from_pem(&ca_pem));
            (
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, pkey)
                    .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?,
                true,
            )
        }
        None => (
            builder
                .with_no_client_auth()
                .with_single_cert(chain, pkey)
                .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?,
            false,
        ),
    };
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(ServerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        tonic: tonic_cfg,
        mtls,
    }))
}

/// Binds a Unix socket: a stale socket file is replaced (anything else at the path is
/// refused), and the socket is made 0600, or 0660 owned by `group`.
pub fn bind_unix(path: &Path, group: Option<u32>) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| format!("{shown}: {e}"))?;
        }
        Ok(_) => {
            return Err(format!(
                "{shown} exists and is not a socket; refusing to replace it"
            ))
        }
        Err(_) => {}
    }
    // Created under a restrictive umask-independent mode right after bind.
    let l = tokio::net::UnixListener::bind(path).map_err(|e| format!("{shown}: {e}"))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{shown}: {e}"))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| format!("{shown}: chown: {e}"))?;
    }
    Ok(l)
}

/// The gid of a group name (for `--socket-group`).
pub fn group_id(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("--socket-group {name}: no such group")),
        Err(e) => Err(format!("--socket-group {name}: {e}")),
    }
}

/// A bound listener of either kind.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix.
    Unix(tokio::net::UnixListener),
}

/// One accepted connection.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Listener {
    /// Binds an endpoint.
    pub async fn bind(ep: &Endpoint, group: Option<u32>) -> Result<Self, String> {
        match ep {
            Endpoint::Tcp(a) => tokio::net::TcpListener::bind(a)
                .await
                .map(Listener::Tcp)
                .map_err(|e| format!("{a}: {e}")),
            Endpoint::Unix(p) => bind_unix(p, group).map(Listener::Unix),
        }
    }

    /// What to print in the ready line.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_default(),
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted::Tcp(s))
            }
            Listener::Unix(l) => Ok(Accepted::Unix(l.accept().await?.0)),
        }
    }
}

/// Waits until a Unix stream has a byte to read (or its peer closed), without taking it
/// (tokio's UnixStream has no `peek`).
async fn unix_data(s: &tokio::net::UnixStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        s.readable().await?;
        let peeked = s.try_io(tokio::io::Interest::READABLE, || {
            let mut b = [0u8; 1];
            nix::sys::socket::recv(
                s.as_raw_fd(),
                &mut b,
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A connection just accepted, before anything was read from it.
#[derive(Debug)]
enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Accepted {
    /// The connection once its client has sent something (or closed it), within
    /// `within`; None when it stayed silent, so that a connection that never speaks
    /// (HTTP, TLS and HTTP/2 clients all speak first) does not hold a slot.
    async fn first_byte(self, within: Duration) -> Option<Box<dyn Io>> {
        // Readiness alone is not enough (a new socket may report it before any byte):
        // peek at one byte, without taking it.
        let ready = match &self {
            Accepted::Tcp(s) => {
                let mut b = [0u8; 1];
                tokio::time::timeout(within, s.peek(&mut b))
                    .await
                    .map(|r| r.map(drop))
            }
            Accepted::Unix(s) => tokio::time::timeout(within, unix_data(s)).await,
        };
        match (ready, self) {
            (Ok(Ok(())), Accepted::Tcp(s)) => Some(Box::new(s)),
            (Ok(Ok(())), Accepted::Unix(s)) => Some(Box::new(s)),
            _ => None,
        }
    }
}

/// An accepted connection holding one of its listener's slots until it is dropped.
pub struct Slotted {
    io: Box<dyn Io>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for Slotted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slotted")
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Slotted {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// The listener's connections, at most `max_connections` open at once: one more is
/// closed as soon as it is accepted, and counted in `refused`; one whose client sends
/// nothing within [`CLIENT_TIMEOUT`] is closed and frees its slot. Accept errors (out
/// of descriptors) are retried after 50 ms, never end the stream. Both servers (HTTP
/// and gRPC) take their connections from here.
pub fn incoming(
    l: Listener,
    max_connections: usize,
    refused: prometheus_client::metrics::counter::Counter,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Slotted>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
        loop {
            let io = match l.accept().await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused.inc();
                drop(io);
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(io) = io.first_byte(CLIENT_TIMEOUT).await {
                    let _ = tx.send(Ok(Slotted { io, _slot: slot })).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves the HTTP router on [`incoming`]'s connections: TLS when given (handshake
/// within [`CLIENT_TIMEOUT`]), headers within [`CLIENT_TIMEOUT`].
pub async fn serve_http(
    mut conns: tokio_stream::wrappers::ReceiverStream<std::io::Result<Slotted>>,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    use tokio_stream::StreamExt;
    while let Some(conn) = conns.next().await {
        let Ok(conn) = conn else { continue };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let io: Box<dyn Io> = match tls {
                Some(acc) => match tokio::time::timeout(CLIENT_TIMEOUT, acc.accept(conn)).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake: {e}");
                        return;
                    }
                    Err(_) => return,
                },
                None => Box::new(conn),
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let mut b =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // One request per connection: an idle keep-alive connection would hold a
            // slot with no timeout (hyper has none between requests).
            b.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT)
                .keep_alive(false);
            if let Err(e) = b
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), svc)
                .await
            {
                tracing::debug!("HTTP connection: {e}");
            }
        });
    }
}

/// Middleware: the request body is read within [`CLIENT_TIMEOUT`] and at most
/// [`MAX_BODY`] bytes, or the request is refused (408 / 413) — a slow or endless body
/// cannot hold a connection slot.
pub async fn read_body_within(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(CLIENT_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({"error": format!("request body: {e} (at most {MAX_BODY} bytes)")})),
            )
                .into_response()
        }
        Err(_) => {
            return (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                axum::Json(serde_json::json!({"error": format!("request body not received within {CLIENT_TIMEOUT:?}")})),
            )
                .into_response()
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoints_and_exposure() {
        assert_eq!(parse("off").unwrap(), None);
        assert_eq!(
            parse("unix:/run/m.sock").unwrap(),
            Some(Endpoint::Unix("/run/m.sock".into()))
        );
        assert!(parse("unix:relative").is_err());
        assert!(parse("nonsense").is_err());
        let lo = parse("127.0.0.1:7001").unwrap().unwrap();
        let any = parse("0.0.0.0:7001").unwrap().unwrap();
        let v6 = parse("[::1]:7001").unwrap().unwrap();
        assert!(check_exposure("HTTP", &lo, false, false).is_ok());
        assert!(check_exposure("HTTP", &v6, false, false).is_ok());
        let e = check_exposure("HTTP", &any, false, false).unwrap_err();
        assert!(
            e.contains("--tls-cert") && e.contains("--insecure-listen"),
            "{e}"
        );
        assert!(check_exposure("HTTP", &any, true, false).is_ok());
        assert!(check_exposure("HTTP", &any, false, true).is_ok());
        assert!(check_exposure("HTTP", &Endpoint::Unix("/x".into()), false, false).is_ok());
    }

    /// A client that sends nothing loses its connection; one that speaks keeps it.
    #[tokio::test]
    async fn silent_connections_are_dropped() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert!(Accepted::Tcp(s)
            .first_byte(Duration::from_millis(300))
            .await
            .is_none());
        let d = tempfile::tempdir().unwrap();
        let ul = tokio::net::UnixListener::bind(d.path().join("s")).unwrap();
        let _silent_unix = tokio::net::UnixStream::connect(d.path().join("s"))
            .await
            .unwrap();
        let (us, _) = ul.accept().await.unwrap();
        assert!(Accepted::Unix(us)
            .first_byte(Duration::from_millis(300))
            .await
            .is_none());
        let mut unix_talker = tokio::net::UnixStream::connect(d.path().join("s"))
            .await
            .unwrap();
        unix_talker.write_all(b"G").await.unwrap();
        let (us, _) = ul.accept().await.unwrap();
        assert!(Accepted::Unix(us)
            .first_byte(Duration::from_millis(300))
            .await
            .is_some());
        let mut talker = tokio::net::TcpStream::connect(addr).await.unwrap();
        talker.write_all(b"G").await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert!(Accepted::Tcp(s)
            .first_byte(Duration::from_millis(300))
            .await
            .is_some());
    }

    #[test]
    fn tls_settings_must_be_complete() {
        assert!(server_tls(None, None, None).unwrap().is_none());
        assert!(server_tls(Some(Path::new("/nonexistent")), None, None).is_err());
        assert!(server_tls(None, None, Some(Path::new("/x"))).is_err());
        let e = server_tls(
            Some(Path::new("/nonexistent/c")),
            Some(Path::new("/nonexistent/k")),
            None,
        )
        .unwrap_err();
        assert!(e.contains("--tls-cert"), "{e}");
    }
}
