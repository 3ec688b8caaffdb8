//! Many clients at once: each a registered node speaking the sync protocol
//! over its own HTTPS connection (`hubsync::transport::HttpsTransport`, the
//! client's real transport), sending small packets (one small entity each)
//! and acknowledging the master's answers as a client does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{Body, Envelope, Header, PROTOCOL_VERSION, WireChange};
use hubsync_core::transport::Transport;
use uuid::Uuid;

/// One simulated client: its node id and token.
#[derive(Clone)]
pub struct Peer {
    pub node_id: Uuid,
    pub token: String,
}

pub struct Target {
    pub tls: Arc<rustls::ClientConfig>,
    pub url: String,
    pub master_id: Uuid,
    pub schema_version: String,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every exchange's latency (successful ones).
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub wall: Duration,
    /// Entities the master sent back (others' changes).
    pub received: usize,
}

impl Outcome {
    pub fn exchanges(&self) -> usize {
        self.latencies.len()
    }

    pub fn per_s(&self) -> f64 {
        self.exchanges() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut v: Vec<Duration> = self.latencies.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e3
    }
}

/// `peers` clients, all at once, each doing `rounds` exchanges one after
/// the other (each exchange bounded by a 60 s timeout).
pub async fn run(target: &Target, peers: &[Peer], rounds: usize) -> Outcome {
    let target = Arc::new(Target {
        tls: target.tls.clone(),
        url: target.url.clone(),
        master_id: target.master_id,
        schema_version: target.schema_version.clone(),
    });
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(peers.len());
    for (k, p) in peers.iter().enumerate() {
        let target = target.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(
            async move { one(&target, &p, k, rounds).await },
        ));
    }
    let mut out = Outcome::default();
    for t in tasks {
        match t.await {
            Ok((lat, errors, first, received)) => {
                out.latencies.extend(lat);
                out.errors += errors;
                out.received += received;
                if out.first_error.is_none() {
                    out.first_error = first;
                }
            }
            Err(e) => {
                out.errors += rounds;
                out.first_error
                    .get_or_insert(format!("client task failed: {e}"));
            }
        }
    }
    out.wall = started.elapsed();
    out
}

async fn one(
    target: &Target,
    p: &Peer,
    k: usize,
    rounds: usize,
) -> (Vec<Duration>, usize, Option<String>, usize) {
    let transport = hubsync::transport::HttpsTransport::new(
        target.tls.clone(),
        &target.url,
        p.token.clone(),
        Duration::from_secs(60),
    );
    let mut lat = Vec::with_capacity(rounds);
    let (mut errors, mut first, mut received) = (0, None, 0);
    let (mut packet_no, mut ack) = (0_i64, 0_i64);
    for r in 0..rounds {
        let request = Envelope {
            header: Header {
                protocol: PROTOCOL_VERSION,
                sender_node_id: p.node_id,
                recipient_node_id: target.master_id,
                packet_no: packet_no + 1,
                ack_packet_no: ack,
                schema_version: target.schema_version.clone(),
                timestamp: now_utc(),
            },
            body: Body {
                entities: vec![WireChange {
                    entity_type: "Brigade".into(),
                    uuid: Uuid::now_v7(),
                    operation: Operation::Insert,
                    data: crate::data::small(k * 1000 + r),
                    updated_at: now_utc(),
                    is_deleted: false,
                    base_rev: None,
                    rev: None,
                    origin_node_id: None,
                }],
                results: Vec::new(),
                more: false,
                remaining: None,
                evict: Vec::new(),
            },
        };
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(90), transport.exchange(&request)).await {
            Ok(Ok(answer)) => {
                lat.push(t.elapsed());
                packet_no += 1;
                ack = answer.header.packet_no;
                received += answer.body.entities.len();
            }
            Ok(Err(e)) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
            Err(_) => {
                errors += 1;
                first.get_or_insert("no answer within 90 s".to_string());
            }
        }
    }
    (lat, errors, first, received)
}
