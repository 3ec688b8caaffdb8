//! The `exchange` target: whole requests through the master's
//! `POST /sync/v1/exchange` route — authentication, limits, decoding,
//! authorization and `Engine::handle_exchange` — on an in-process master
//! with a temporary SQLite store, without sockets or TLS (the route is
//! called as a service, with the peer address a listener would add).
//!
//! Input: one control byte, then the body. The control byte picks the
//! credentials (bits 0-1: the client's token, a forged token, none), whether
//! the body is gzipped by the harness (bit 2 clear) or sent as is, and
//! whether `Content-Encoding: gzip` is sent (bit 3 clear). In the body the
//! placeholders `$SENDER`, `$MASTER` and `$OTHER` become the client's, the
//! master's and another registered node's ids, so that seeds stay valid
//! against a master created afresh for every run.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hubsync::config::Config;
use hubsync::listener::PeerAddr;
use hubsync::node::Node;
use hubsync_core::entity::Entity;
use hubsync_core::protocol::{self, Envelope, ErrorBody};
use hubsync_core::store::NodeRecord;
use hyper_util::service::TowerToHyperService;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{Request, StatusCode};
use warp::reply::Response;

/// Statuses the exchange endpoint may answer (docs/protocol.md, "Errors").
/// 5xx is never expected from a healthy store and is a finding.
pub const DOCUMENTED: [u16; 9] = [200, 400, 401, 403, 408, 409, 413, 422, 429];

/// The in-process master, created once per process.
pub struct FuzzMaster {
    pub rt: tokio::runtime::Runtime,
    pub node: Arc<Node>,
    route: BoxedFilter<(Response,)>,
    pub token: String,
    pub client: Uuid,
    pub other: Uuid,
    pub master: Uuid,
    _dir: tempfile::TempDir,
}

/// The master's view of what a request may change: entities, held
/// changes and both client nodes' packet state.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub entities: Vec<Entity>,
    pub held: i64,
    pub client: Option<NodeRecord>,
    pub other: Option<NodeRecord>,
}

/// What one request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl FuzzMaster {
    /// The process's fuzz master.
    pub fn get() -> &'static FuzzMaster {
        static MASTER: OnceLock<FuzzMaster> = OnceLock::new();
        MASTER.get_or_init(FuzzMaster::start)
    }

    fn start() -> FuzzMaster {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a tokio runtime for the fuzz master: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let (node, token, client, other) = rt.block_on(async {
            let master_dir = dir.path().join("master");
            hubsync::init::init_master(&hubsync::init::MasterInit {
                dir: &master_dir,
                listen: "127.0.0.1:0",
                api: "127.0.0.1:0",
                schemas: Some(&crate::schemas_dir()),
                storage: None,
                code: "MASTER",
            })
            .await
            .unwrap_or_else(|e| panic!("init master: {e}"));
            let mut config = Config::load_with_env(&master_dir.join("hubsync.toml"), &[])
                .unwrap_or_else(|e| panic!("the master's config: {e}"));
            // Every input from one address and one node: no slow-down, no
            // lockout, no rate limit, or the run would test only those.
            let limits = &mut config.limits;
            limits.max_decompressed_bytes = crate::codec::FUZZ_MAX_DECOMPRESSED;
            limits.max_body_bytes = crate::codec::FUZZ_MAX_DECOMPRESSED;
            limits.auth_failure_delay_ms = 0;
            limits.auth_failures_before_lockout = u32::MAX;
            limits.rate_limit_per_minute = u32::MAX;
            limits.rate_limit_burst = u32::MAX;
            limits.max_concurrent_exchanges_per_node = u32::MAX;
            let node = Node::open(config)
                .await
                .unwrap_or_else(|e| panic!("open the fuzz master: {e}"));
            let master_id = node.engine.identity().node_id;
            let token = hubsync::auth::new_token(master_id)
                .unwrap_or_else(|_| panic!("the system random source failed"));
            let client = node
                .engine
                .add_node("FUZZ-1", "FUZZ-1", &hubsync::auth::token_hash(&token))
                .await
                .unwrap_or_else(|e| panic!("add node: {e}"));
            let other_token = hubsync::auth::new_token(master_id)
                .unwrap_or_else(|_| panic!("the system random source failed"));
            let other = node
                .engine
                .add_node("FUZZ-2", "FUZZ-2", &hubsync::auth::token_hash(&other_token))
                .await
                .unwrap_or_else(|e| panic!("add node: {e}"));
            (Arc::new(node), token, client.id, other.id)
        });
        let master = node.engine.identity().node_id;
        let route = hubsync::exchange::route(node.clone())
            .recover(hubsync::api::recover)
            .unify()
            .boxed();
        FuzzMaster {
            rt,
            node,
            route,
            token,
            client,
            other,
            master,
            _dir: dir,
        }
    }

    /// Replaces the id placeholders of a body.
    pub fn fill(&self, body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        for (placeholder, id) in [
            (&b"$SENDER"[..], self.client),
            (&b"$MASTER"[..], self.master),
            (&b"$OTHER"[..], self.other),
        ] {
            out = replace(&out, placeholder, id.to_string().as_bytes());
        }
        out
    }

    /// Posts one request to the route and reads the whole answer.
    pub async fn post(&self, authorization: Option<String>, gzip: bool, body: Vec<u8>) -> Answer {
        let mut request = Request::post("/sync/v1/exchange");
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let mut request = request
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|e| panic!("a request: {e}"));
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        let service = TowerToHyperService::new(warp::service(self.route.clone()));
        let response = match hyper::service::Service::call(&service, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e) => panic!("reading the answer's body failed: {e}"),
        };
        Answer { status, body }
    }

    /// What the master holds that a request may change.
    pub async fn snapshot(&self) -> Snapshot {
        let store = self.node.engine.store();
        Snapshot {
            entities: store.dump_entities().await.unwrap_or_else(store_failed),
            held: store.count_held().await.unwrap_or_else(store_failed),
            client: store
                .get_node(self.client)
                .await
                .unwrap_or_else(store_failed),
            other: store
                .get_node(self.other)
                .await
                .unwrap_or_else(store_failed),
        }
    }
}

fn store_failed<T>(e: hubsync_core::store::StoreError) -> T {
    panic!("reading the fuzz master's store failed: {e}")
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Target `exchange`. Invariants: never a panic; only documented statuses
/// (no 5xx); a 200 is a gzip envelope from the master to the client; any
/// other answer is a gzip `{"error": {code, message}}` and changed nothing
/// (no entity, held change or packet number); another node's packet state
/// never changes, whatever the client sends (Property 26: only the node's
/// own token, on its own queue, is served).
pub fn exchange(data: &[u8]) {
    let _ = exchange_status(data);
}

/// [`exchange`], returning the answer's status (None for an empty input).
pub fn exchange_status(data: &[u8]) -> Option<u16> {
    // One master serves every caller in the process, and the test harness
    // runs tests on several threads: the before/after snapshots are only
    // meaningful if no other request runs in between.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (&control, body) = data.split_first()?;
    let master = FuzzMaster::get();
    let authorization = match control & 3 {
        0 | 1 => Some(format!("Bearer {}", master.token)),
        2 => Some(format!(
            "Bearer {}",
            hubsync::auth::new_token(master.master)
                .unwrap_or_else(|_| panic!("the system random source failed"))
        )),
        _ => None,
    };
    let body = master.fill(body);
    let body = if control & 4 == 0 {
        protocol::gzip(&body).unwrap_or_else(|e| panic!("gzip in memory: {e}"))
    } else {
        body
    };
    let encoding = control & 8 == 0;
    let status = master.rt.block_on(async {
        let before = master.snapshot().await;
        let answer = master.post(authorization, encoding, body).await;
        let after = master.snapshot().await;
        let status = answer.status.as_u16();
        assert!(
            DOCUMENTED.contains(&status),
            "undocumented status {status}: {}",
            String::from_utf8_lossy(
                &protocol::gunzip(&answer.body, 1 << 20).unwrap_or(answer.body.clone())
            )
        );
        assert_eq!(
            before.other, after.other,
            "another node's packet state changed"
        );
        let json = protocol::gunzip(&answer.body, 64 << 20)
            .unwrap_or_else(|e| panic!("a {status} answer that is not gzip: {e}"));
        if status == 200 {
            let reply: Envelope = serde_json::from_slice(&json)
                .unwrap_or_else(|e| panic!("a 200 answer that is not an envelope: {e}"));
            assert_eq!(reply.header.sender_node_id, master.master);
            assert_eq!(reply.header.recipient_node_id, master.client);
        } else {
            let refusal: ErrorBody = serde_json::from_slice(&json).unwrap_or_else(|e| {
                panic!(
                    "a {status} answer that is not an error body: {e}: {}",
                    String::from_utf8_lossy(&json)
                )
            });
            assert!(!refusal.error.code.is_empty() && !refusal.error.message.is_empty());
            assert_eq!(
                before, after,
                "a refused request ({status} {}) changed the master",
                refusal.error.code
            );
        }
        status
    });
    Some(status)
}
