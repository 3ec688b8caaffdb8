//! A scripted HTTPS front door for a master: clients are pointed at it
//! instead of the master, and for each request a plan decides whether it
//! is forwarded, refused (429/503 with or without `Retry-After`), forwarded
//! with its answer lost after the master committed, or forwarded with its
//! body corrupted in flight. It also counts what passed: packets and
//! changes forwarded, per packet number, so that a test can show a drain
//! resumed rather than restarted.
//!
//! It speaks real TLS with the master's own certificate (so a client's
//! configured CA trusts it) and forwards through the host's `HttpsClient`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hubsync::https_client::HttpsClient;
use hubsync::listener::{ServerHandle, serve_https};
use hubsync_core::protocol::{self, DecodeLimits};
use warp::Filter;
use warp::http::{HeaderMap, Response, StatusCode};

/// What the front door does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Pass it to the master and its answer back.
    Forward,
    /// Answer `status` with a JSON error body without forwarding; with
    /// `retry_after`, a `Retry-After` header of that exact text.
    Refuse {
        status: u16,
        retry_after: Option<String>,
    },
    /// Forward it, let the master commit, then answer 502 instead of the
    /// master's answer.
    LoseAnswer,
    /// Flip a byte in the middle of the body and cut it after that byte
    /// (so that it can never decode), then forward it.
    CorruptBody,
}

/// Decides the fault of request number `n` (from 1).
pub type Plan = Box<dyn FnMut(u64) -> Fault + Send>;

/// What went through the front door.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    pub requests: u64,
    pub forwarded: u64,
    pub refused: u64,
    pub answers_lost: u64,
    pub bodies_corrupted: u64,
    /// Client packets forwarded intact (requests carrying changes).
    pub packets: u64,
    /// Changes in the packets forwarded intact.
    pub changes: u64,
    /// How many times each client packet number was forwarded intact.
    pub packet_sends: BTreeMap<i64, u32>,
    /// Status codes of the master's answers, counted.
    pub master_statuses: BTreeMap<u16, u64>,
    /// Master packets (answers carrying changes) that came from the master,
    /// delivered or lost, and the changes they carried.
    pub master_packets: u64,
    pub master_changes: u64,
    /// How many times each master packet number came from the master.
    pub master_packet_sends: BTreeMap<i64, u32>,
}

struct Shared {
    plan: Mutex<Plan>,
    traffic: Mutex<Traffic>,
    upstream: HttpsClient,
    upstream_url: String,
}

/// A running front door; [`FrontDoor::url`] is what clients use as
/// `[master].url`.
pub struct FrontDoor {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl FrontDoor {
    /// Starts a front door on a loopback port for the master whose sync
    /// endpoint is `master_sync`, presenting `cert`/`key` (the master's
    /// own) and trusting `ca_cert` upstream.
    pub async fn start(
        master_sync: SocketAddr,
        cert: &std::path::Path,
        key: &std::path::Path,
        ca_cert: &std::path::Path,
        plan: Plan,
    ) -> anyhow::Result<FrontDoor> {
        let tls = hubsync::tls::server_config(cert, key)?;
        let upstream = HttpsClient::from_ca_cert(ca_cert, Duration::from_secs(60), 256 << 20)?;
        let shared = Arc::new(Shared {
            plan: Mutex::new(plan),
            traffic: Mutex::new(Traffic::default()),
            upstream,
            upstream_url: format!("https://{master_sync}"),
        });
        let s = shared.clone();
        let route = warp::post()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(move |path: warp::path::FullPath, headers, body| {
                let s = s.clone();
                async move { handle(&s, path.as_str(), &headers, body).await }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = serve_https(listener, tls, route).await;
        Ok(FrontDoor {
            addr: server.local_addr,
            shared,
            server,
        })
    }

    /// A front door for the master of `cluster`.
    pub async fn for_cluster(cluster: &crate::Cluster, plan: Plan) -> anyhow::Result<FrontDoor> {
        let listen = cluster
            .master
            .node
            .config
            .listen
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the master has no [listen]"))?;
        let sync = cluster
            .master
            .sync_addr
            .ok_or_else(|| anyhow::anyhow!("the master has no sync address"))?;
        let ca = cluster.dir.path().join("master/tls/ca.pem");
        FrontDoor::start(sync, &listen.cert, &listen.key, &ca, plan).await
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Replaces the plan (request numbering goes on).
    pub fn set_plan(&self, plan: Plan) {
        if let Ok(mut p) = self.shared.plan.lock() {
            *p = plan;
        }
    }

    pub fn traffic(&self) -> Traffic {
        self.shared
            .traffic
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    pub async fn shutdown(self) {
        self.server.shutdown(Duration::from_secs(5)).await;
    }
}

/// A plan that forwards everything.
pub fn forward_all() -> Plan {
    Box::new(|_| Fault::Forward)
}

async fn handle(s: &Shared, path: &str, headers: &HeaderMap, body: Bytes) -> Response<Bytes> {
    let fault = {
        let n = {
            let mut t = s.traffic.lock().unwrap_or_else(|e| e.into_inner());
            t.requests += 1;
            t.requests
        };
        let mut plan = s.plan.lock().unwrap_or_else(|e| e.into_inner());
        (plan)(n)
    };
    let count = |f: &dyn Fn(&mut Traffic)| {
        let mut t = s.traffic.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t);
    };
    let mut body = body;
    match &fault {
        Fault::Refuse {
            status,
            retry_after,
        } => {
            count(&|t| t.refused += 1);
            let error = serde_json::json!({"error": {
                "code": if *status == 429 { "rate_limited" } else { "unavailable" },
                "message": format!("the front door refused the request with {status}"),
            }});
            let mut r = Response::builder()
                .status(StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
                .header("content-type", "application/json");
            if let Some(ra) = retry_after {
                r = r.header("retry-after", ra.as_str());
            }
            return r
                .body(Bytes::from(error.to_string()))
                .unwrap_or_else(|_| Response::new(Bytes::new()));
        }
        Fault::CorruptBody => {
            count(&|t| t.bodies_corrupted += 1);
            let mut raw = body.to_vec();
            if !raw.is_empty() {
                let mid = raw.len() / 2;
                raw[mid] ^= 0x5a;
                // Also cut the tail: gzip's CRC would catch the flip only at
                // the end, and some flips decode to valid deflate.
                raw.truncate(mid + 1);
            }
            body = Bytes::from(raw);
        }
        Fault::Forward | Fault::LoseAnswer => {
            if let Ok(env) = protocol::decode_envelope(&body, DecodeLimits::default()) {
                let n = env.body.entities.len() as u64;
                if n > 0 {
                    let packet_no = env.header.packet_no;
                    count(&|t| {
                        t.packets += 1;
                        t.changes += n;
                        *t.packet_sends.entry(packet_no).or_default() += 1;
                    });
                }
            }
        }
    }
    let forward: Vec<(&str, String)> = ["authorization", "content-encoding", "content-type"]
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .map(|v| (*name, v.to_string()))
        })
        .collect();
    let url = format!("{}{path}", s.upstream_url);
    let answer = s.upstream.post(&url, &forward, body).await;
    count(&|t| t.forwarded += 1);
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Bytes::from(format!("the master could not be reached: {e}")))
                .unwrap_or_else(|_| Response::new(Bytes::new()));
        }
    };
    count(&|t| *t.master_statuses.entry(answer.status).or_default() += 1);
    if answer.status == 200
        && let Ok(env) = protocol::decode_envelope(&answer.body, DecodeLimits::default())
        && !env.body.entities.is_empty()
    {
        let (packet_no, n) = (env.header.packet_no, env.body.entities.len() as u64);
        count(&|t| {
            t.master_packets += 1;
            t.master_changes += n;
            *t.master_packet_sends.entry(packet_no).or_default() += 1;
        });
    }
    if fault == Fault::LoseAnswer {
        count(&|t| t.answers_lost += 1);
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Bytes::from_static(b"the front door lost the answer"))
            .unwrap_or_else(|_| Response::new(Bytes::new()));
    }
    let mut r = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY));
    for name in ["content-encoding", "content-type", "retry-after"] {
        if let Some(v) = answer.headers.get(name) {
            r = r.header(name, v.clone());
        }
    }
    r.body(answer.body)
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}
