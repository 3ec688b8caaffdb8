//! A minimal client of a running node's local API (plain HTTP on
//! loopback): used by `hubsync sync` to ask a running `hubsync serve` of the
//! same node to sync instead of racing it, and by tests.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::error::HostError;

/// Sends one request to the local API at `addr`; returns the status and the
/// JSON body (Null when the body is empty or not JSON).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), std::io::Error> {
    request_with_token(addr, method, path, body, None).await
}

/// [`request`] with the local API's bearer token, when it has one.
pub async fn request_with_token(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value), std::io::Error> {
    let io_err = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| io_err(&e))?;
    tokio::spawn(conn);
    let bytes = match body {
        Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| io_err(&e))?),
        None => Bytes::new(),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .header("content-type", "application/json")
        .header("content-length", bytes.len().to_string())
        .body(Full::new(bytes))
        .map_err(|e| io_err(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| io_err(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| io_err(&e))?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// `POST /api/v1/sync` on the node's local API; returns the summary.
pub async fn post_sync(
    api_addr: SocketAddr,
    token: Option<&str>,
) -> Result<serde_json::Value, HostError> {
    let (status, value) = request_with_token(api_addr, "POST", "/api/v1/sync", None, token)
        .await
        .map_err(|e| {
            HostError::Other(format!(
                "another process holds this node's lock (a running `hubsync serve`), but its local API at {api_addr} did not answer: {e}; stop that process or wait for it"
            ))
        })?;
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(HostError::Other(format!(
            "the running node's sync failed: {}",
            value["error"]["message"]
                .as_str()
                .unwrap_or("unknown error")
        )))
    }
}
