//! `pg-ingest`: how fast a PostgreSQL master takes in client changes,
//! against the floor of the same database.
//!
//! * **Figure**: N new DailyReport entities (~500 bytes of JSON, 3 lines
//!   each) pushed through the master engine exactly as the exchange
//!   endpoint does — `Engine::handle_exchange` with packets of
//!   `max_packet_entities` (500), each packet acknowledging the master's
//!   previous answer — in process (no HTTPS, no gzip: those cost the same on
//!   any backend and are spread over hosts).
//! * **Baseline**: the same N rows (same columns, same JSON) written with
//!   plain multi-row `INSERT … VALUES (…), (…)` into a bare table in the
//!   same database, one transaction per 500 rows.
//!
//! Both run in one fresh scratch database, one after the other.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hubsync_core::conflict::ConflictPolicy;
use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{
    Body, Envelope, Header, Outcome as ChangeOutcome, PROTOCOL_VERSION, WireChange,
};
use hubsync_core::schema::EntityRegistry;
use hubsync_core::store::{NodeRole, PoolOptions, Store};
use hubsync_core::{Engine, EngineOptions, InitParams};
use hubsync_store_postgres::PostgresStore;
use hubsync_store_postgres::scratch::ScratchDatabase;
use serde_json::json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::report::Row;
use crate::{Args, Outcome};

const PACKET: usize = 500;

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let Some(base) = ["HUBSYNC_BENCH_POSTGRES_URL", "HUBSYNC_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
    else {
        return Ok(Outcome::Skipped(
            "no PostgreSQL server: set HUBSYNC_BENCH_POSTGRES_URL (or HUBSYNC_TEST_POSTGRES_URL), e.g. postgres://postgres@127.0.0.1:5432/test".into(),
        ));
    };
    let n = args.n.unwrap_or(if args.quick { 2_000 } else { 20_000 });
    let db = ScratchDatabase::create(&base).await?;
    eprintln!(
        "pg-ingest: {n} entities, packets of {PACKET}, scratch database {}",
        db.name()
    );

    let store: Arc<dyn Store> =
        Arc::new(PostgresStore::open(&db.url, &PoolOptions::default()).await?);
    let master = open_master(store.clone()).await?;
    let client = master
        .add_node("BENCH-CLIENT", "bench client", "bench-token-hash")
        .await?;
    // The references every report points at, on the master.
    let brigade = master
        .create(
            "Brigade",
            None,
            json!({"name": "Masons", "foreman": "Ivan Petrov", "active": true}),
        )
        .await?
        .uuid;
    let site = master
        .create(
            "Site",
            None,
            json!({"name": "Depot", "address": "Depot, 1 Main St", "parent": null}),
        )
        .await?
        .uuid;
    let mut employees = Vec::new();
    for name in ["Ivan Petrov", "Oleg Sidorov", "Anna Ivanova"] {
        let e = master
            .create(
                "Employee",
                None,
                json!({"full_name": name, "brigade": brigade, "position": "mason", "hourly_rate": 21.5}),
            )
            .await?;
        employees.push(e.uuid);
    }
    let changes: Vec<WireChange> = (0..n)
        .map(|i| daily_report(i, brigade, site, &employees))
        .collect();
    let avg_bytes = changes
        .iter()
        .map(|c| c.data.to_string().len())
        .sum::<usize>()
        / n.max(1);
    eprintln!("pg-ingest: average entity JSON {avg_bytes} bytes");

    // Figure: the master engine.
    let started = Instant::now();
    let mut ack = 0;
    for (k, chunk) in changes.chunks(PACKET).enumerate() {
        let request = Envelope {
            header: Header {
                protocol: PROTOCOL_VERSION,
                sender_node_id: client.id,
                recipient_node_id: master.identity().node_id,
                packet_no: k as i64 + 1,
                ack_packet_no: ack,
                schema_version: master.registry().version().to_string(),
                timestamp: now_utc(),
            },
            body: Body {
                entities: chunk.to_vec(),
                results: Vec::new(),
                more: false,
                remaining: None,
                evict: Vec::new(),
                results_kept: 0,
                holding: None,
                sends_ahead: false,
            },
        };
        let answer = master
            .handle_exchange(client.id, request)
            .await
            .with_context(|| format!("exchange of packet {}", k + 1))?;
        anyhow::ensure!(
            answer.body.results.len() == chunk.len()
                && answer
                    .body
                    .results
                    .iter()
                    .all(|r| r.outcome == ChangeOutcome::Applied),
            "packet {}: not every change was applied",
            k + 1
        );
        ack = answer.header.packet_no;
    }
    let figure = started.elapsed();
    let stored = store.dump_entities().await?.len();
    anyhow::ensure!(
        stored == n + 5,
        "{stored} entities stored, expected {}",
        n + 5
    );

    // Baseline: the same rows, plain multi-row INSERTs.
    let pool = sqlx::PgPool::connect(&db.url).await?;
    sqlx::raw_sql(
        "CREATE TABLE bench_baseline (
            entity_type TEXT NOT NULL, uuid UUID NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
            is_deleted BOOLEAN NOT NULL, data JSONB NOT NULL, rev BIGINT, origin_node_id UUID,
            PRIMARY KEY (entity_type, uuid))",
    )
    .execute(&pool)
    .await?;
    let started = Instant::now();
    for chunk in changes.chunks(PACKET) {
        let mut tx = pool.begin().await?;
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO bench_baseline (entity_type, uuid, updated_at, is_deleted, data, rev, origin_node_id) ",
        );
        q.push_values(chunk.iter().enumerate(), |mut b, (i, c)| {
            b.push_bind(c.entity_type.as_str())
                .push_bind(c.uuid)
                .push_bind(c.updated_at)
                .push_bind(c.is_deleted)
                .push_bind(sqlx::types::Json(&c.data))
                .push_bind(i as i64)
                .push_bind(client.id);
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let baseline = started.elapsed();
    pool.close().await;
    master.store().close().await;
    drop(db);

    let per_s = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    Ok(Outcome::Rows {
        rows: vec![
            Row::rate(
                "pg-ingest (master engine)",
                format!("N={n}"),
                "ent/s",
                per_s(figure),
                "multi-row INSERT, same rows",
                per_s(baseline),
            )
            .note(format!(
                "engine {:.2} s, baseline {:.2} s",
                figure.as_secs_f64(),
                baseline.as_secs_f64()
            )),
        ],
        extra: json!({"avg_entity_bytes": avg_bytes}),
    })
}

async fn open_master(store: Arc<dyn Store>) -> anyhow::Result<Engine> {
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let registry = EntityRegistry::load_dir(&schemas)
        .with_context(|| format!("loading the schema set {}", schemas.display()))?;
    Engine::initialize(
        store.as_ref(),
        &InitParams {
            role: NodeRole::Master,
            node_id: Uuid::now_v7(),
            code: "MASTER".into(),
            name: "master".into(),
            master_id: None,
        },
    )
    .await?;
    Ok(Engine::open(
        store,
        registry,
        ConflictPolicy::server_wins(),
        EngineOptions::default(),
    )
    .await?)
}

/// A DailyReport as a client sends it: ~500 bytes of JSON, three lines.
fn daily_report(i: usize, brigade: Uuid, site: Uuid, employees: &[Uuid]) -> WireChange {
    let refs = crate::data::Refs {
        brigade,
        site,
        employees: vec![employees[0], employees[1], employees[2]],
    };
    WireChange {
        entity_type: "DailyReport".into(),
        uuid: Uuid::now_v7(),
        operation: Operation::Insert,
        data: crate::data::daily_report(i, &refs),
        updated_at: now_utc(),
        is_deleted: false,
        base_rev: None,
        rev: None,
        origin_node_id: None,
    }
}
