//! The client side of the sync protocol's transport: HTTPS POSTs to the
//! master.
//!
//! Owns: a pooled hyper client over rustls (trusting only the configured CA),
//! the overall request timeout, the response size cap, and turning transport
//! failures into errors that say whether retrying later can help.
//!
//! Must never: speak plain HTTP (an `http://` URL is refused before any
//! connection is made), buffer a response past its cap, or put header values
//! (the bearer token) into errors or logs.

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// How long an idle pooled connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A pooled HTTPS client for the sync protocol. Cheap to clone; clones share
/// the connection pool.
#[derive(Clone)]
pub struct HttpsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_response_bytes: usize,
    /// Names the trust anchor in TLS errors ("ca.pem" path, if known).
    ca_label: Arc<str>,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient")
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("ca", &self.ca_label)
            .finish_non_exhaustive()
    }
}

/// A complete response: status, headers and the (size-capped) body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request failed. [`HttpClientError::is_transient`] says whether
/// retrying later can help.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("`{url}` is not a valid URL: {reason}; expected https://host:port/path")]
    InvalidUrl { url: String, reason: String },

    #[error(
        "refusing to send to `{url}`: the sync protocol is HTTPS only; \
         use an https:// URL for [master].url"
    )]
    NotHttps { url: String },

    #[error("header `{name}` cannot be sent: {reason}")]
    InvalidHeader { name: String, reason: String },

    #[error(
        "cannot connect to {url}: {reason}; is the master running and reachable at that address? Nothing was lost: the changes stay queued and are sent by the next sync"
    )]
    Connect { url: String, reason: String },

    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },

    #[error(
        "no complete response from {url} within {after:?}; the master may be overloaded or the network slow; the changes stay queued and the next sync sends them again"
    )]
    Timeout { url: String, after: Duration },

    #[error(
        "the response from {url} is larger than the {limit}-byte limit; \
         the master sent more than this client accepts (raise the limit or lower the master's packet size)"
    )]
    TooLarge { url: String, limit: usize },

    #[error(
        "the exchange with {url} broke off: {reason}; the changes stay queued and the next sync sends them again"
    )]
    Io { url: String, reason: String },
}

impl HttpClientError {
    /// True when the same request may succeed later (network trouble), false
    /// when it cannot without a change of configuration or data.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HttpClientError::Connect { .. }
                | HttpClientError::Timeout { .. }
                | HttpClientError::Io { .. }
        )
    }
}

impl HttpsClient {
    /// A client using `tls` (its ALPN list is replaced by "http/1.1"), with
    /// every request bounded by `timeout` and every response body by
    /// `max_response_bytes`.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Self {
        Self::build(
            tls,
            timeout,
            max_response_bytes,
            "the configured CA certificate".into(),
        )
    }

    /// Like [`HttpsClient::new`], trusting only the CA certificate(s) in
    /// `ca_cert`; TLS errors then name that file.
    pub fn from_ca_cert(
        ca_cert: &Path,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::client_config(ca_cert)?;
        Ok(Self::build(
            tls,
            timeout,
            max_response_bytes,
            ca_cert.display().to_string().into(),
        ))
    }

    fn build(
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        max_response_bytes: usize,
        ca_label: Arc<str>,
    ) -> Self {
        let mut tls = (*tls).clone();
        // hyper-rustls sets ALPN itself (and refuses a preset list).
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        HttpsClient {
            client,
            timeout,
            max_response_bytes,
            ca_label,
        }
    }

    /// POSTs `body` with the given headers and returns the status, headers
    /// and body. The whole exchange is bounded by the client's timeout, the
    /// body by its size cap (read incrementally, never buffered past the cap).
    /// An `http://` URL is refused before any connection is made.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<HttpResponse, HttpClientError> {
        let uri = parse_https_url(url)?;
        let shown = display_url(&uri);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| HttpClientError::InvalidUrl {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        for (name, value) in headers {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                HttpClientError::InvalidHeader {
                    name: (*name).to_string(),
                    reason: e.to_string(),
                }
            })?;
            // The reason never quotes the value: it may be a bearer token.
            let mut header_value =
                HeaderValue::from_str(value).map_err(|_| HttpClientError::InvalidHeader {
                    name: (*name).to_string(),
                    reason: "the value contains characters not allowed in a header".into(),
                })?;
            if header_name == hyper::header::AUTHORIZATION {
                header_value.set_sensitive(true);
            }
            request.headers_mut().append(header_name, header_value);
        }

        match tokio::time::timeout(self.timeout, self.exchange(request, &shown)).await {
            Ok(result) => result,
            Err(_) => Err(HttpClientError::Timeout {
                url: shown,
                after: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        url: &str,
    ) -> Result<HttpResponse, HttpClientError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| self.classify_send_error(&e, url))?;
        let (parts, mut body) = response.into_parts();
        let too_large = || HttpClientError::TooLarge {
            url: url.to_string(),
            limit: self.max_response_bytes,
        };
        // Refuse early when the server announces an oversized body.
        let announced = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > self.max_response_bytes as u64) {
            return Err(too_large());
        }
        let mut buf = BytesMut::with_capacity(
            announced.map_or(0, |len| len.min(self.max_response_bytes as u64) as usize),
        );
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpClientError::Io {
                url: url.to_string(),
                reason: error_chain(&e),
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len().saturating_add(data.len()) > self.max_response_bytes {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: buf.freeze(),
        })
    }

    fn classify_send_error(
        &self,
        error: &hyper_util::client::legacy::Error,
        url: &str,
    ) -> HttpClientError {
        if let Some(tls) = find_rustls_error(error) {
            let reason = match tls {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::InvalidCertRevocationList(_) => format!(
                    "the master's certificate is not trusted by {}: {tls}; check [master].ca_cert",
                    self.ca_label
                ),
                other => format!(
                    "{other}; check that the master serves HTTPS at this address and that \
                     [master].ca_cert is its CA"
                ),
            };
            return HttpClientError::Tls {
                url: url.to_string(),
                reason,
            };
        }
        if error.is_connect() {
            HttpClientError::Connect {
                url: url.to_string(),
                reason: error_chain(error),
            }
        } else {
            HttpClientError::Io {
                url: url.to_string(),
                reason: error_chain(error),
            }
        }
    }
}

/// The wait a `Retry-After` header asks for (RFC 9110 §10.2.3): either
/// delay-seconds or an HTTP date, relative to `now`. None when the header
/// is absent or unreadable; a date already past asks for no wait.
pub fn retry_after(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // An absurd number of digits saturates rather than being ignored.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is RFC 2822 syntax.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses `url` and insists on https with a host.
fn parse_https_url(url: &str) -> Result<Uri, HttpClientError> {
    let uri: Uri =
        url.parse().map_err(
            |e: hyper::http::uri::InvalidUri| HttpClientError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            },
        )?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => {}
        Some(_) => {
            return Err(HttpClientError::NotHttps {
                url: display_url(&uri),
            });
        }
        None => {
            return Err(HttpClientError::InvalidUrl {
                url: url.to_string(),
                reason: "no scheme".into(),
            });
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(HttpClientError::InvalidUrl {
            url: display_url(&uri),
            reason: "no host".into(),
        });
    }
    Ok(uri)
}

/// The URL without any user:password part, for messages.
fn display_url(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => {
            let host_port = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, hp)| hp);
            let path = uri.path_and_query().map_or("", |p| p.as_str());
            format!("{scheme}://{host_port}{path}")
        }
        _ => uri.to_string(),
    }
}

/// Finds a rustls error anywhere in an error chain, including inside
/// `io::Error`s (whose `source()` skips the wrapped error itself).
fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_rustls_error(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// "outer: inner: innermost", skipping repeats (io::Error repeats its inner
/// error's message).
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::{PeerAddr, serve_https};
    use crate::tls::{client_config, generate_ca_and_server, server_config};
    use tokio::net::TcpListener;
    use warp::Filter;

    const BOUND: Duration = Duration::from_secs(20);

    struct Master {
        _dir: tempfile::TempDir,
        ca_cert: std::path::PathBuf,
        server: crate::listener::ServerHandle,
    }

    impl Master {
        fn url(&self, path: &str) -> String {
            format!("https://127.0.0.1:{}{path}", self.server.local_addr.port())
        }
    }

    /// A master answering `POST /echo` with `peer=<addr> auth=<bool> body=<body>`
    /// and `POST /big` with 64 KiB.
    async fn start_master() -> Master {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = generate_ca_and_server(dir.path(), "test", &[]).expect("generate");
        let config = server_config(&tls.server_cert, &tls.server_key).expect("server config");
        let echo = warp::post()
            .and(warp::path("echo"))
            .and(warp::ext::optional::<PeerAddr>())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::bytes())
            .map(
                |peer: Option<PeerAddr>, auth: Option<String>, body: Bytes| {
                    let peer = peer.map(|p| p.0.to_string()).unwrap_or_default();
                    format!(
                        "peer={peer} auth={} body={}",
                        auth.is_some(),
                        String::from_utf8_lossy(&body)
                    )
                },
            );
        let big = warp::post()
            .and(warp::path("big"))
            .map(|| "x".repeat(64 * 1024));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = serve_https(listener, config, echo.or(big)).await;
        Master {
            ca_cert: tls.ca_cert,
            _dir: dir,
            server,
        }
    }

    async fn post(
        client: &HttpsClient,
        url: &str,
        body: &'static str,
    ) -> Result<HttpResponse, HttpClientError> {
        let headers = [("Authorization", "Bearer not-a-real-token".to_string())];
        tokio::time::timeout(
            BOUND,
            client.post(url, &headers, Bytes::from_static(body.as_bytes())),
        )
        .await
        .expect("every request is bounded")
    }

    #[tokio::test]
    async fn post_over_https_trusting_the_ca_echoes_body_and_peer() {
        let master = start_master().await;
        let client = HttpsClient::from_ca_cert(&master.ca_cert, Duration::from_secs(10), 1 << 20)
            .expect("client");
        for _ in 0..2 {
            // Twice: the second request reuses the pooled connection.
            let response = post(&client, &master.url("/echo"), "hello")
                .await
                .expect("post");
            assert_eq!(response.status, 200);
            let text = String::from_utf8_lossy(&response.body).to_string();
            assert!(text.starts_with("peer=127.0.0.1:"), "{text}");
            assert!(text.ends_with("auth=true body=hello"), "{text}");
        }
        master.server.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_client_trusting_another_ca_gets_a_tls_error_naming_the_ca_file() {
        let master = start_master().await;
        let other = tempfile::tempdir().expect("tempdir");
        let other_ca = generate_ca_and_server(other.path(), "other", &[]).expect("other ca");
        let client = HttpsClient::from_ca_cert(&other_ca.ca_cert, Duration::from_secs(10), 1 << 20)
            .expect("client");
        let err = post(&client, &master.url("/echo"), "hello")
            .await
            .expect_err("untrusted");
        assert!(matches!(err, HttpClientError::Tls { .. }), "{err:?}");
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(text.contains("not trusted by"), "{text}");
        assert!(
            text.contains(&other_ca.ca_cert.display().to_string()),
            "{text}"
        );
        assert!(text.contains("[master].ca_cert"), "{text}");
        assert!(!text.contains("not-a-real-token"), "{text}");

        // The same through `new` with a prepared rustls config.
        let client = HttpsClient::new(
            client_config(&other_ca.ca_cert).expect("config"),
            Duration::from_secs(10),
            1 << 20,
        );
        let err = post(&client, &master.url("/echo"), "hello")
            .await
            .expect_err("untrusted");
        assert!(matches!(err, HttpClientError::Tls { .. }), "{err:?}");
        master.server.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn an_http_url_is_refused_before_connecting() {
        // A listener that would see any connection attempt.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = generate_ca_and_server(dir.path(), "t", &[]).expect("ca");
        let client =
            HttpsClient::from_ca_cert(&ca.ca_cert, Duration::from_secs(5), 1024).expect("client");
        let err = post(
            &client,
            &format!("http://127.0.0.1:{port}/sync/v1/exchange"),
            "x",
        )
        .await
        .expect_err("http refused");
        assert!(matches!(err, HttpClientError::NotHttps { .. }), "{err:?}");
        assert!(
            err.to_string().contains("the sync protocol is HTTPS only"),
            "{err}"
        );
        assert!(!err.is_transient());
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection may be made");

        let err = post(&client, "not a url", "x").await.expect_err("invalid");
        assert!(matches!(err, HttpClientError::InvalidUrl { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_response_over_the_cap_is_too_large() {
        let master = start_master().await;
        let client = HttpsClient::from_ca_cert(&master.ca_cert, Duration::from_secs(10), 1000)
            .expect("client");
        let err = post(&client, &master.url("/big"), "")
            .await
            .expect_err("too large");
        assert!(
            matches!(err, HttpClientError::TooLarge { limit: 1000, .. }),
            "{err:?}"
        );
        // Small responses still pass under the same cap.
        let ok = post(&client, &master.url("/echo"), "hi")
            .await
            .expect("small");
        assert_eq!(ok.status, 200);
        master.server.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = generate_ca_and_server(dir.path(), "t", &[]).expect("ca");
        let client =
            HttpsClient::from_ca_cert(&ca.ca_cert, Duration::from_secs(5), 1024).expect("client");
        let err = post(&client, &format!("https://127.0.0.1:{port}/x"), "x")
            .await
            .expect_err("nothing listens");
        assert!(err.is_transient(), "{err:?}");
        assert!(matches!(err, HttpClientError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts TCP but never answers the TLS handshake.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = generate_ca_and_server(dir.path(), "t", &[]).expect("ca");
        let client = HttpsClient::from_ca_cert(&ca.ca_cert, Duration::from_millis(300), 1024)
            .expect("client");
        let err = post(&client, &format!("https://127.0.0.1:{port}/x"), "x")
            .await
            .expect_err("silent");
        assert!(matches!(err, HttpClientError::Timeout { .. }), "{err:?}");
        assert!(err.is_transient());
        holder.abort();
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        use chrono::TimeZone;
        let now = chrono::Utc
            .with_ymd_and_hms(1994, 11, 6, 8, 49, 30)
            .single()
            .expect("valid date");
        let check = |value: &str, expected: Option<Duration>| {
            let mut headers = HeaderMap::new();
            headers.insert(
                hyper::header::RETRY_AFTER,
                HeaderValue::from_str(value).expect("header"),
            );
            assert_eq!(retry_after(&headers, now), expected, "Retry-After: {value}");
        };
        check("120", Some(Duration::from_secs(120)));
        check(" 0 ", Some(Duration::ZERO));
        check(
            "99999999999999999999999",
            Some(Duration::from_secs(u64::MAX)),
        );
        check(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            Some(Duration::from_secs(7)),
        );
        check("Sun, 06 Nov 1994 08:00:00 GMT", Some(Duration::ZERO));
        check("-5", None);
        check("soon", None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn urls_in_messages_drop_credentials() {
        let uri: Uri = "https://user:secret@example.org:8443/sync"
            .parse()
            .expect("uri");
        assert_eq!(display_url(&uri), "https://example.org:8443/sync");
    }
}
