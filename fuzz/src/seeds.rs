//! The seed corpora, built from real packets (the protocol's own types and
//! encoder) and the example schema set. `cargo test -p hubsync-fuzz --test
//! fuzz -- --ignored write_seed_corpus` rewrites the `seed-*` files of
//! `fuzz/corpus/`; the `regression-*` files there are kept.

use hubsync_core::entity::{Operation, now_utc};
use hubsync_core::protocol::{self, Body, Envelope, Header, PROTOCOL_VERSION, WireChange};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Target;

fn change(entity_type: &str, uuid: Uuid, data: Value) -> WireChange {
    WireChange {
        entity_type: entity_type.into(),
        uuid,
        operation: Operation::Insert,
        data,
        updated_at: now_utc(),
        is_deleted: false,
        base_rev: None,
        rev: None,
        origin_node_id: None,
    }
}

fn envelope(packet_no: i64, ack: i64, entities: Vec<WireChange>) -> Envelope {
    Envelope {
        header: Header {
            protocol: PROTOCOL_VERSION,
            sender_node_id: Uuid::from_u128(1),
            recipient_node_id: Uuid::from_u128(2),
            packet_no,
            ack_packet_no: ack,
            schema_version: "1.0.0".into(),
            timestamp: now_utc(),
        },
        body: Body::default(),
    }
    .with_entities(entities)
}

trait WithEntities {
    fn with_entities(self, entities: Vec<WireChange>) -> Self;
}

impl WithEntities for Envelope {
    fn with_entities(mut self, entities: Vec<WireChange>) -> Self {
        self.body.entities = entities;
        self
    }
}

/// Named packets a client really sends: a poll, inserts of every example
/// type referencing each other, an update on a base revision, a delete, a
/// reference to an unknown entity, and the refusals (another sender or
/// recipient, invalid data, another schema MAJOR, an impossible ack).
pub fn packets() -> Vec<(&'static str, Envelope)> {
    let (brigade, site, parent, employee, report) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let graph = vec![
        change(
            "Brigade",
            brigade,
            json!({"name": "North", "foreman": "Ivanov", "active": true}),
        ),
        change(
            "Site",
            parent,
            json!({"name": "District 5", "parent": null}),
        ),
        change(
            "Site",
            site,
            json!({"name": "Block A", "address": "1 Main St", "parent": parent.to_string()}),
        ),
        change(
            "Employee",
            employee,
            json!({"full_name": "Petrov P.", "brigade": brigade.to_string(), "position": "mason", "hourly_rate": 12.5}),
        ),
        change(
            "DailyReport",
            report,
            json!({
                "date": "2026-11-24", "brigade": brigade.to_string(), "site": site.to_string(),
                "status": "draft", "notes": "rain after 14:00",
                "lines": [{"employee": employee.to_string(), "hours": 7.5, "task": "masonry"}]
            }),
        ),
    ];
    let mut update = change(
        "Brigade",
        brigade,
        json!({"name": "North-2", "active": false}),
    );
    update.operation = Operation::Update;
    update.base_rev = Some(1);
    let mut delete = change("Site", site, json!({"name": "Block A"}));
    delete.operation = Operation::Delete;
    delete.is_deleted = true;
    delete.base_rev = Some(3);
    let mut wrong_version = envelope(
        1,
        0,
        vec![change("Brigade", Uuid::now_v7(), json!({"name": "v2"}))],
    );
    wrong_version.header.schema_version = "2.0.0".into();
    vec![
        ("poll", envelope(0, 0, vec![])),
        ("insert-brigade", envelope(1, 0, vec![graph[0].clone()])),
        ("insert-graph", envelope(1, 0, graph)),
        ("update", envelope(2, 1, vec![update])),
        ("delete", envelope(3, 1, vec![delete])),
        (
            "unknown-reference",
            envelope(
                1,
                0,
                vec![change(
                    "Employee",
                    Uuid::now_v7(),
                    json!({"full_name": "Sidorov", "brigade": Uuid::now_v7().to_string()}),
                )],
            ),
        ),
        (
            "invalid-data",
            envelope(
                1,
                0,
                vec![change(
                    "DailyReport",
                    Uuid::now_v7(),
                    json!({"date": "2026-13-45", "brigade": "x", "lines": [{"hours": 30}]}),
                )],
            ),
        ),
        (
            "unknown-type",
            envelope(1, 0, vec![change("Nope", Uuid::now_v7(), json!({}))]),
        ),
        ("other-schema-major", wrong_version),
        ("impossible-ack", envelope(0, 999, vec![])),
    ]
}

/// A packet's JSON with the header's ids turned into the exchange
/// target's placeholders (`$SENDER`, `$MASTER`, or `$OTHER`).
fn with_placeholders(env: &Envelope, sender: &str, recipient: &str) -> Vec<u8> {
    let mut value = serde_json::to_value(env).unwrap_or_else(|e| panic!("{e}"));
    value["header"]["sender_node_id"] = json!(sender);
    value["header"]["recipient_node_id"] = json!(recipient);
    serde_json::to_vec(&value).unwrap_or_else(|e| panic!("{e}"))
}

fn gzip_of(bytes: &[u8]) -> Vec<u8> {
    protocol::gzip(bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// Every seed: (target, file name, contents).
pub fn all() -> Vec<(Target, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, env) in packets() {
        let json = serde_json::to_vec(&env).unwrap_or_else(|e| panic!("{e}"));
        out.push((Target::Envelope, format!("seed-{name}.json"), json.clone()));
        let mut exchange = vec![0u8];
        exchange.extend(with_placeholders(&env, "$SENDER", "$MASTER"));
        out.push((Target::Exchange, format!("seed-{name}"), exchange));
    }
    let poll = with_placeholders(&packets()[0].1, "$SENDER", "$MASTER");
    let graph = with_placeholders(&packets()[2].1, "$SENDER", "$MASTER");
    for (name, control, body) in [
        (
            "as-other-node",
            0u8,
            with_placeholders(&packets()[2].1, "$OTHER", "$MASTER"),
        ),
        (
            "to-other-node",
            0,
            with_placeholders(&packets()[0].1, "$SENDER", "$OTHER"),
        ),
        ("forged-token", 2, graph.clone()),
        ("no-token", 3, poll.clone()),
        ("not-gzipped", 4, poll.clone()),
        ("no-content-encoding", 8, poll.clone()),
        (
            "deep-json",
            0,
            format!("{}1{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
        ),
    ] {
        let mut input = vec![control];
        input.extend(body);
        out.push((Target::Exchange, format!("seed-{name}"), input));
    }
    // gzip: a cap picked by the first byte, then a stream.
    let graph_gz = gzip_of(&graph);
    let mut two_members = gzip_of(b"{\"a\":");
    two_members.extend(gzip_of(b"1}"));
    // 2 MiB of zeros: over the fuzz cap, a few KiB packed.
    let bomb = gzip_of(&vec![0u8; 2 << 20]);
    for (name, cap, stream) in [
        ("packet", 5u8, graph_gz.clone()),
        ("packet-small-cap", 2, graph_gz.clone()),
        ("empty", 0, gzip_of(b"")),
        ("truncated", 5, graph_gz[..graph_gz.len() / 2].to_vec()),
        ("two-members", 3, two_members),
        ("bomb", 4, bomb),
        ("not-gzip", 5, graph.clone()),
    ] {
        let mut input = vec![cap];
        input.extend(stream);
        out.push((Target::Gzip, format!("seed-{name}"), input));
    }
    for (name, files) in schema_sets() {
        out.push((
            Target::Schema,
            format!("seed-{name}"),
            crate::schema::join_files(&files),
        ));
    }
    out
}

/// The example schema set, and variants with the problems the loader must
/// report.
pub fn schema_sets() -> Vec<(&'static str, Vec<(String, String)>)> {
    let dir = crate::schemas_dir();
    let mut example: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_else(|e| panic!("{e}"));
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    example.sort();
    let edit = |file: &str, from: &str, to: &str| -> Vec<(String, String)> {
        example
            .iter()
            .map(|(n, t)| {
                let t = if n == file {
                    t.replace(from, to)
                } else {
                    t.clone()
                };
                (n.clone(), t)
            })
            .collect()
    };
    let without_version: Vec<_> = example
        .iter()
        .filter(|(n, _)| n != "schema-set.json")
        .cloned()
        .collect();
    vec![
        ("example", example.clone()),
        ("no-version", without_version),
        (
            "dangling-ref",
            edit("Brigade.schema.json", "NonEmptyName", "Missing"),
        ),
        (
            "self-ref",
            edit("Site.schema.json", "common.json#/$defs/NullableUuid", "#"),
        ),
        (
            "wrong-title",
            edit("Employee.schema.json", "\"Employee\"", "\"Worker\""),
        ),
        (
            "bad-json",
            edit("DailyReport.schema.json", "\"lines\"", "\"lines\" ::"),
        ),
        (
            "ref-to-unknown-type",
            edit("DailyReport.schema.json", "\"Brigade\"", "\"Crew\""),
        ),
        (
            "bad-pattern",
            edit(
                "Brigade.schema.json",
                "\"type\": \"string\" }",
                "\"type\": \"string\", \"pattern\": \"(\" }",
            ),
        ),
    ]
}
