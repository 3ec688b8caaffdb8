//! Several master hosts on one PostgreSQL database (issue 4): two
//! `hubsync serve` hosts with the same configuration and database, three
//! clients that sync through a host chosen at random, session after
//! session, while clients and both hosts write — including the same request
//! sent to both hosts at once. Everything must converge, nothing may be
//! applied twice, and no packet number may be reused.
//!
//! Deterministic choices come from a small LCG whose seed is printed
//! (`HUBSYNC_TEST_SEED` replays one). Needs HUBSYNC_TEST_POSTGRES_URL;
//! without it the test says SKIPPED on stderr and passes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use hubsync::transport::HttpsTransport;
use hubsync_core::engine::NoProgress;
use hubsync_core::protocol::{Envelope, Outcome};
use hubsync_core::transport::{Transport, TransportError};
use hubsync_tests::{Cluster, ClusterOptions, MasterBackend, bounded, dump};
use serde_json::{Value, json};

const CLIENTS: usize = 3;
const ROUNDS: usize = 14; // × 3 clients = 42 sessions
/// Every this many rounds, one client's session sends each request to both
/// hosts at once.
const DUPLICATE_EVERY: usize = 3;

/// A 64-bit LCG (Knuth's MMIX constants): reproducible choices without a
/// dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One request and the answer it got from one host.
#[derive(Clone)]
struct Exchange {
    client: usize,
    host: usize,
    request_packet: i64,
    carried: usize,
    answer_packet: i64,
    answer_ack: i64,
    answer_entities: usize,
    results: Value,
    duplicate: bool,
}

type Log = Arc<Mutex<Vec<Exchange>>>;

fn record(log: &Log, client: usize, host: usize, req: &Envelope, ans: &Envelope, dup: bool) {
    let entry = Exchange {
        client,
        host,
        request_packet: req.header.packet_no,
        carried: req.body.entities.len(),
        answer_packet: ans.header.packet_no,
        answer_ack: ans.header.ack_packet_no,
        answer_entities: ans.body.entities.len(),
        results: serde_json::to_value(&ans.body.results).expect("results serialize"),
        duplicate: dup,
    };
    log.lock().expect("log").push(entry);
}

/// Sends through one host and records the exchange.
struct Recording {
    inner: HttpsTransport,
    client: usize,
    host: usize,
    log: Log,
}

#[async_trait::async_trait]
impl Transport for Recording {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let answer = self.inner.exchange(request).await?;
        record(&self.log, self.client, self.host, request, &answer, false);
        Ok(answer)
    }
}

/// Sends every request to BOTH hosts at once (a load balancer retrying
/// while the first attempt still runs), records both answers, and gives the
/// client the one `pick` names.
struct Duplicating {
    hosts: [HttpsTransport; 2],
    client: usize,
    pick: usize,
    log: Log,
}

#[async_trait::async_trait]
impl Transport for Duplicating {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError> {
        let (a, b) = tokio::join!(
            self.hosts[0].exchange(request),
            self.hosts[1].exchange(request)
        );
        let (a, b) = (a?, b?);
        record(&self.log, self.client, 0, request, &a, true);
        record(&self.log, self.client, 1, request, &b, true);
        Ok(if self.pick == 0 { a } else { b })
    }
}

fn brigade(name: &str) -> Value {
    json!({"name": name, "foreman": "Ivan Petrov", "active": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_master_hosts_on_one_database_stay_correct() {
    let seed = std::env::var("HUBSYNC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        });
    eprintln!("multi-master seed: {seed} (replay with HUBSYNC_TEST_SEED={seed})");
    let mut rng = Lcg(seed);

    let opts = ClusterOptions {
        master_backend: MasterBackend::Postgres,
        max_packet_entities: Some(5),
        ..ClusterOptions::default()
    };
    let Some(c) = bounded("starting the cluster", Cluster::try_start(CLIENTS, opts))
        .await
        .expect("the cluster starts")
    else {
        return;
    };
    let host_b = bounded("starting a second master host", c.start_master_host())
        .await
        .expect("the second host starts");
    let hosts = [
        c.master.sync_addr.expect("host A serves sync"),
        host_b.sync_addr.expect("host B serves sync"),
    ];
    assert_ne!(hosts[0], hosts[1]);
    let masters = [c.master(), &host_b.node.engine];
    assert_eq!(
        masters[0].identity().node_id,
        masters[1].identity().node_id,
        "both hosts are the same master"
    );

    let log: Log = Arc::default();
    let mut writes = 0usize;
    let mut client_writes = 0usize;
    let mut duplicated_sessions = 0usize;
    for round in 0..ROUNDS {
        // Writes: every client creates 0–2 entities, each host 0–1.
        for i in 0..CLIENTS {
            for _ in 0..rng.below(3) {
                c.client(i)
                    .create("Brigade", None, brigade(&format!("c{i}-r{round}-{writes}")))
                    .await
                    .expect("client write");
                writes += 1;
                client_writes += 1;
            }
        }
        let mut master_writes = Vec::new();
        for (h, master) in masters.iter().enumerate() {
            if rng.below(2) == 0 {
                let name = format!("m{h}-r{round}-{writes}");
                writes += 1;
                master_writes.push(async move {
                    master
                        .create("Brigade", None, brigade(&name))
                        .await
                        .expect("master write")
                });
            }
        }
        // Sessions: every client at once, each through a random host; one
        // of them through both hosts at once every few rounds. The master
        // hosts' own writes run meanwhile.
        let dup_client = (round % DUPLICATE_EVERY == 0).then(|| rng.below(CLIENTS as u64) as usize);
        let mut sessions = Vec::new();
        for i in 0..CLIENTS {
            let transport: Box<dyn Transport> = if dup_client == Some(i) {
                duplicated_sessions += 1;
                Box::new(Duplicating {
                    hosts: [
                        c.transport_to(i, hosts[0]).expect("transport"),
                        c.transport_to(i, hosts[1]).expect("transport"),
                    ],
                    client: i,
                    pick: rng.below(2) as usize,
                    log: log.clone(),
                })
            } else {
                let host = rng.below(2) as usize;
                Box::new(Recording {
                    inner: c.transport_to(i, hosts[host]).expect("transport"),
                    client: i,
                    host,
                    log: log.clone(),
                })
            };
            let engine = c.client(i);
            sessions.push(async move {
                engine
                    .sync_session(transport.as_ref(), &NoProgress)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: session of client {i}: {e}"))
            });
        }
        bounded(
            &format!("round {round}"),
            futures_join(sessions, master_writes),
        )
        .await;
    }
    eprintln!(
        "{writes} writes ({client_writes} on clients), {} exchanges, {duplicated_sessions} sessions duplicated to both hosts",
        log.lock().expect("log").len()
    );

    // Everything converges (through host A, then checked on both).
    bounded("syncing until quiet", c.sync_until_quiet(8))
        .await
        .expect("the cluster becomes quiet");
    let master_state = dump(masters[0]).await.expect("dump");
    assert_eq!(dump(masters[1]).await.expect("dump"), master_state);
    assert_eq!(master_state.len(), writes, "every write is on the master");
    for i in 0..CLIENTS {
        assert_eq!(
            dump(c.client(i)).await.expect("dump"),
            master_state,
            "client {i} converged"
        );
        let master_id = c
            .client(i)
            .identity()
            .master_id
            .expect("client knows its master");
        assert_eq!(
            c.client(i)
                .store()
                .count_queued(master_id)
                .await
                .expect("count"),
            0,
            "client {i} has nothing left to send"
        );
    }

    // Nothing applied twice: no conflicts (nobody edits another's entity),
    // and exactly one revision per write, numbered 1..=writes without a
    // gap — a packet applied twice would have taken more.
    let store = masters[0].store();
    assert!(store.audit(None, 100).await.expect("audit").is_empty());
    let revs: BTreeSet<i64> = store
        .dump_entities()
        .await
        .expect("dump")
        .iter()
        .map(|e| e.rev.expect("master entities have a revision"))
        .collect();
    assert_eq!(
        revs,
        (1..=writes as i64).collect::<BTreeSet<_>>(),
        "one revision per write, none skipped or taken twice"
    );
    for e in store.dump_entities().await.expect("dump") {
        assert!(store.history(e.uuid).await.expect("history").is_empty());
    }

    // Packet numbers, from the recorded exchanges.
    let log = log.lock().expect("log").clone();
    assert!(
        log.iter().any(|x| x.duplicate && x.carried > 0),
        "a duplicated request carried changes"
    );
    assert!(
        log.iter().any(|x| x.answer_entities > 0),
        "the hosts sent entities to the clients"
    );
    let mut applied = 0usize;
    for i in 0..CLIENTS {
        let mine: Vec<&Exchange> = log.iter().filter(|x| x.client == i).collect();
        // Client → master: every packet number carried is acknowledged, and
        // every answer to the same packet holds the same results (a replay,
        // never a second application).
        let mut by_packet: BTreeMap<i64, Vec<&Exchange>> = BTreeMap::new();
        for x in mine.iter().filter(|x| x.carried > 0) {
            by_packet.entry(x.request_packet).or_default().push(x);
        }
        let numbers: Vec<i64> = by_packet.keys().copied().collect();
        assert_eq!(
            numbers,
            (1..=numbers.len() as i64).collect::<Vec<_>>(),
            "client {i}'s packet numbers run 1, 2, 3 … without reuse or gap"
        );
        for (n, answers) in &by_packet {
            for a in answers {
                assert_eq!(a.answer_ack, *n, "client {i} packet {n} acknowledged");
                assert_eq!(
                    a.results, answers[0].results,
                    "client {i} packet {n}: every answer (host {} and host {}) holds the same results",
                    answers[0].host, a.host
                );
            }
            let outcomes: Vec<Outcome> = serde_json::from_value::<
                Vec<hubsync_core::protocol::ChangeResult>,
            >(answers[0].results.clone())
            .expect("results decode")
            .into_iter()
            .map(|r| r.outcome)
            .collect();
            assert!(
                outcomes.iter().all(|o| *o == Outcome::Applied),
                "{outcomes:?}"
            );
            applied += outcomes.len();
            if answers.iter().any(|a| a.duplicate) {
                assert_eq!(answers.len(), 2, "both hosts answered the duplicate");
            }
        }
        let row = store
            .get_node(c.client(i).identity().node_id)
            .await
            .expect("node row")
            .expect("registered");
        assert_eq!(
            row.received_packet_no,
            numbers.len() as i64,
            "client {i}: the master applied each packet once and no other"
        );
        // Master → client: the packet numbers the hosts answered with run
        // 1, 2, 3 … per node, never skipping one (an answer with nothing
        // new repeats the last acknowledged number; a packet may be empty
        // when it covers only the node's own revisions).
        let master_packets: BTreeSet<i64> = mine
            .iter()
            .filter(|x| x.answer_packet > 0)
            .map(|x| x.answer_packet)
            .collect();
        let max = master_packets.last().copied().unwrap_or(0);
        assert_eq!(
            master_packets,
            (1..=max).collect::<BTreeSet<_>>(),
            "client {i}: master packet numbers are sequential"
        );
        assert!(row.out_packet_no >= max && row.sent_packet_no == row.out_packet_no);
    }
    // Every client write travelled in a recorded session (each round's
    // sessions drain the queues) and was applied exactly once.
    assert_eq!(applied, client_writes, "applied changes = client writes");

    host_b.shutdown(std::time::Duration::from_secs(5)).await;
    c.shutdown().await;
}

/// Runs the sessions and the master writes concurrently.
async fn futures_join<S, W>(sessions: Vec<S>, writes: Vec<W>)
where
    S: std::future::Future,
    W: std::future::Future,
{
    futures_util::future::join(
        futures_util::future::join_all(sessions),
        futures_util::future::join_all(writes),
    )
    .await;
}
