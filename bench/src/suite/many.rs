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
    /// Each client writes brigades of its own foreman
    /// ([`crate::data::foreman`]), for a master where each is scoped to
    /// them; otherwise all write the same foreman's.
    pub own_foreman: bool,
}

/// How a client spaces its exchanges.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Closed loop: the next exchange as soon as the previous answer is in.
    /// With every client doing that at once, the run measures the master's
    /// saturation: a latency is then the crowd's size over the throughput.
    Closed,
    /// A fleet syncing on a timer: each client exchanges once every
    /// `every`, the clients' first exchanges spread evenly over the first
    /// `every`. A latency counts from the exchange's scheduled instant, so
    /// the time a late exchange spent waiting for the previous one to end
    /// is in it (no coordinated omission).
    Every(Duration),
}

/// Where a client's packet numbering stands: the last packet it sent and
/// the last master packet it acknowledges. A run starts each client where
/// an earlier one left it.
pub type Position = (i64, i64);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every exchange's latency (successful ones).
    pub latencies: Vec<Duration>,
    /// Those of the exchanges after each client's first: without the
    /// start, when every client connects and sends at the same instant.
    pub later: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub wall: Duration,
    /// Entities the master sent back (others' changes).
    pub received: usize,
    /// Each client's position at the end, in the order of the peers.
    pub positions: Vec<Position>,
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
        quantile_ms(&self.latencies, q)
    }

    /// The same, of the exchanges after each client's first.
    pub fn later_quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.later, q)
    }
}

/// The `q` quantile (0..=1) of `latencies`, in ms (NaN when empty).
pub fn quantile_ms(latencies: &[Duration], q: f64) -> f64 {
    let mut v = latencies.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1e3
}

/// What one simulated client saw.
struct ClientOutcome {
    latencies: Vec<Duration>,
    later: Vec<Duration>,
    errors: usize,
    /// The client's first error, verbatim, and when it happened.
    first_error: Option<(Instant, String)>,
    received: usize,
    position: Position,
}

/// `peers` clients (numbered from `first`: client `k` is node
/// `<prefix>-<k + 1>`), all at once, each doing `rounds` exchanges one after
/// the other (each exchange bounded by a 90 s timeout) at `pace`, starting
/// from `from` (the positions an earlier run returned, in the order of the
/// peers; new clients when `None`). The first error reported is the
/// earliest one in time, verbatim.
pub async fn run(
    target: &Target,
    peers: &[Peer],
    first: usize,
    rounds: usize,
    pace: Pace,
    from: Option<&[Position]>,
) -> Outcome {
    let target = Arc::new(Target {
        tls: target.tls.clone(),
        url: target.url.clone(),
        master_id: target.master_id,
        schema_version: target.schema_version.clone(),
        own_foreman: target.own_foreman,
    });
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(peers.len());
    for (k, p) in peers.iter().enumerate() {
        let target = target.clone();
        let p = p.clone();
        let position = from.and_then(|f| f.get(k).copied()).unwrap_or((0, 0));
        let schedule = schedule_of(pace, started, k, peers.len());
        tasks.push(tokio::spawn(async move {
            one(&target, &p, first + k, rounds, schedule, position).await
        }));
    }
    let mut out = Outcome::default();
    let mut first: Option<(Instant, String)> = None;
    for t in tasks {
        let c = match t.await {
            Ok(c) => c,
            Err(e) => ClientOutcome {
                latencies: Vec::new(),
                later: Vec::new(),
                errors: rounds,
                first_error: Some((Instant::now(), format!("client task failed: {e}"))),
                received: 0,
                position: (0, 0),
            },
        };
        out.positions.push(c.position);
        out.latencies.extend(c.latencies);
        out.later.extend(c.later);
        out.errors += c.errors;
        out.received += c.received;
        if let Some((at, msg)) = c.first_error
            && first.as_ref().is_none_or(|(f, _)| at < *f)
        {
            first = Some((at, msg));
        }
    }
    out.wall = started.elapsed();
    out.first_error = first.map(|(_, msg)| msg);
    out
}

/// Client `k` of `n`'s first due instant and interval at `pace` (`None`:
/// closed loop): its exchange `r` is due at `started + every * (k / n + r)`,
/// so the clients' exchanges are spread evenly over each interval.
fn schedule_of(pace: Pace, started: Instant, k: usize, n: usize) -> Option<(Instant, Duration)> {
    match pace {
        Pace::Closed => None,
        Pace::Every(every) => Some((started + every.mul_f64(k as f64 / n.max(1) as f64), every)),
    }
}

/// One client's exchanges; `schedule` is the due instant of its first
/// exchange and the interval between them (`None`: closed loop).
async fn one(
    target: &Target,
    p: &Peer,
    k: usize,
    rounds: usize,
    schedule: Option<(Instant, Duration)>,
    position: Position,
) -> ClientOutcome {
    let transport = hubsync::transport::HttpsTransport::new(
        target.tls.clone(),
        &target.url,
        p.token.clone(),
        Duration::from_secs(60),
    );
    let mut out = ClientOutcome {
        latencies: Vec::with_capacity(rounds),
        later: Vec::with_capacity(rounds),
        errors: 0,
        first_error: None,
        received: 0,
        position,
    };
    let (mut packet_no, mut ack) = position;
    for r in 0..rounds {
        let due = schedule.map(|(at, every)| at + every * r as u32);
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
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
                    data: if target.own_foreman {
                        crate::data::small_of(k * 1000 + r, &crate::data::foreman(k))
                    } else {
                        crate::data::small(k * 1000 + r)
                    },
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
                results_kept: 0,
                holding: None,
                sends_ahead: false,
            },
        };
        let t = due.unwrap_or_else(Instant::now);
        let failed =
            match tokio::time::timeout(Duration::from_secs(90), transport.exchange(&request)).await
            {
                Ok(Ok(answer)) => {
                    out.latencies.push(t.elapsed());
                    if r > 0 {
                        out.later.push(t.elapsed());
                    }
                    packet_no += 1;
                    ack = answer.header.packet_no;
                    out.received += answer.body.entities.len();
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer within 90 s".to_string()),
            };
        if let Some(msg) = failed {
            out.errors += 1;
            out.first_error.get_or_insert((Instant::now(), msg));
        }
    }
    out.position = (packet_no, ack);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_clients_are_spread_evenly_over_one_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let firsts: Vec<Duration> = (0..4)
            .map(|k| {
                let (first, step) = schedule_of(Pace::Every(every), t0, k, 4).expect("paced");
                assert_eq!(step, every);
                first - t0
            })
            .collect();
        assert_eq!(
            firsts,
            [0, 1250, 2500, 3750].map(Duration::from_millis).to_vec()
        );
        assert!(schedule_of(Pace::Closed, t0, 3, 4).is_none());
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&l, 0.5), 51.0);
        assert_eq!(quantile_ms(&l, 0.99), 99.0);
        assert!(quantile_ms(&[], 0.5).is_nan());
    }
}
