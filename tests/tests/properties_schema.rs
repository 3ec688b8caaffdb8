//! Property tests of schema sets across nodes (design Properties 14, 17,
//! 18, 19 and 21): entity types that exist only as schema files synced
//! like any other, and schema set versions checked on every exchange. Bare
//! engines on SQLite files, the real packet codec, in-memory transport.

use std::collections::BTreeMap;

use hubsync_core::conflict::ConflictPolicy;
use hubsync_core::schema::EntityRegistry;
use hubsync_core::store::NodeRole;
use hubsync_core::transport::TransportError;
use hubsync_core::{Engine, EngineError, EngineOptions, InitParams};
use hubsync_tests::{MemoryTransport, block_on, schemas_dir};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// A master and clients as bare engines on SQLite files in `dir`, each
/// with its own schema set.
async fn nodes(
    dir: &std::path::Path,
    master_registry: &EntityRegistry,
    client_registries: &[EntityRegistry],
) -> (Engine, Vec<(Engine, MemoryTransport)>) {
    let open = |name: &str| {
        let url = format!("sqlite://{}", dir.join(name).display());
        async move { hubsync::storage::open_store(&url).await.expect("store") }
    };
    let store = open("master.db").await;
    let master_id = Uuid::now_v7();
    Engine::initialize(
        store.as_ref(),
        &InitParams {
            role: NodeRole::Master,
            node_id: master_id,
            code: "MASTER".into(),
            name: "master".into(),
            master_id: None,
        },
    )
    .await
    .expect("master init");
    let master = Engine::open(
        store,
        master_registry.clone(),
        ConflictPolicy::server_wins(),
        EngineOptions::default(),
    )
    .await
    .expect("master opens");
    let mut clients = Vec::new();
    for (i, registry) in client_registries.iter().enumerate() {
        let code = format!("C{i}");
        let rec = master
            .add_node(&code, &code, &format!("hash-{i}"))
            .await
            .expect("node add");
        let store = open(&format!("client{i}.db")).await;
        Engine::initialize(
            store.as_ref(),
            &InitParams {
                role: NodeRole::Client,
                node_id: rec.id,
                code: code.clone(),
                name: code,
                master_id: Some(master_id),
            },
        )
        .await
        .expect("client init");
        let engine = Engine::open(
            store,
            registry.clone(),
            ConflictPolicy::server_wins(),
            EngineOptions::default(),
        )
        .await
        .expect("client opens");
        clients.push((
            engine,
            MemoryTransport {
                master: master.clone(),
                node_id: rec.id,
            },
        ));
    }
    (master, clients)
}

async fn close(master: &Engine, clients: &[(Engine, MemoryTransport)]) {
    for (c, _) in clients {
        c.store().close().await;
    }
    master.store().close().await;
}

// ---------------------------------------------------------------------------
// Property 14: types the code has never heard of

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Boolean,
    Number,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Text => "string",
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
            Kind::Number => "number",
        }
    }

    fn value(self, seed: u64) -> Value {
        match self {
            Kind::Text => json!(format!("v{seed}")),
            Kind::Integer => json!((seed % 100_000) as i64 - 50_000),
            Kind::Boolean => json!(seed.is_multiple_of(2)),
            // Quarters: exact in binary, so the round trip is exact.
            Kind::Number => json!((seed % 4000) as f64 / 4.0),
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Text),
        Just(Kind::Integer),
        Just(Kind::Boolean),
        Just(Kind::Number)
    ]
}

/// A random schema set: type name → field name → kind.
type Types = BTreeMap<String, BTreeMap<String, Kind>>;

fn types() -> impl Strategy<Value = Types> {
    prop::collection::btree_map(
        "[A-Z][a-z]{2,9}",
        prop::collection::btree_map("[a-z][a-z_]{0,7}", kind(), 1..5),
        1..4,
    )
}

fn registry_of(types: &Types) -> EntityRegistry {
    let mut files = vec![(
        "schema-set.json".to_string(),
        r#"{"version": "1.0.0"}"#.to_string(),
    )];
    for (name, fields) in types {
        let properties: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(f, k)| (f.clone(), json!({"type": k.name()})))
            .collect();
        let first = fields.keys().next().cloned().unwrap_or_default();
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": name,
            "type": "object",
            "properties": properties,
            "required": [first],
            "additionalProperties": false,
        });
        files.push((format!("{name}.schema.json"), schema.to_string()));
    }
    EntityRegistry::from_files(files).expect("a generated schema set loads")
}

fn data_of(fields: &BTreeMap<String, Kind>, seed: u64) -> Value {
    Value::Object(
        fields
            .iter()
            .enumerate()
            .map(|(i, (f, k))| {
                (
                    f.clone(),
                    k.value(seed.wrapping_mul(31).wrapping_add(i as u64)),
                )
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Properties 17-19, 21: schema set versions

/// The repository's schema set under another version number.
fn versioned(version: (u64, u64, u64)) -> EntityRegistry {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(schemas_dir()).expect("schemas dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_string();
        if !name.ends_with(".json") {
            continue;
        }
        let text = if name == "schema-set.json" {
            format!(
                r#"{{"version": "{}.{}.{}"}}"#,
                version.0, version.1, version.2
            )
        } else {
            std::fs::read_to_string(&path).expect("schema file")
        };
        files.push((name, text));
    }
    EntityRegistry::from_files(files).expect("the example schema set loads")
}

fn version() -> impl Strategy<Value = (u64, u64, u64)> {
    (0u64..4, 0u64..4, 0u64..4)
}

/// A client and master version pair: half of them with the same MAJOR.
fn version_pair() -> impl Strategy<Value = ((u64, u64, u64), (u64, u64, u64))> {
    prop_oneof![
        (version(), version()),
        (version(), 0u64..4, 0u64..4).prop_map(|(c, minor, patch)| (c, (c.0, minor, patch))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    // Feature: sync-system, Property 14: For any entity type registered in the system, it should be automatically included in synchronization without code changes
    #[test]
    fn any_registered_entity_type_syncs_without_code(
        types in types(),
        entities in prop::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 1..10),
        edit in any::<prop::sample::Index>(),
    ) {
        block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let registry = registry_of(&types);
            let (master, clients) = nodes(dir.path(), &registry, &[registry.clone(), registry.clone()]).await;
            let names: Vec<&String> = types.keys().collect();
            let (writer, reader) = (&clients[0], &clients[1]);
            // Created on one client, offline.
            let mut written: Vec<(String, Uuid, Value)> = Vec::new();
            for (ty, seed) in &entities {
                let name = names[ty.index(names.len())];
                let data = data_of(&types[name], *seed);
                let e = writer.0.create(name, None, data.clone()).await.expect("create of a generated type");
                written.push((name.clone(), e.uuid, data));
            }
            writer.0.sync_session(&writer.1, &hubsync_core::engine::NoProgress).await.expect("upload");
            reader.0.sync_session(&reader.1, &hubsync_core::engine::NoProgress).await.expect("download");
            for (ty, uuid, data) in &written {
                prop_assert_eq!(&master.get(ty, *uuid).await.expect("on the master").data, data);
                prop_assert_eq!(&reader.0.get(ty, *uuid).await.expect("on the other client").data, data);
            }
            // And back: an edit on the other client reaches the writer.
            let (ty, uuid, _) = &written[edit.index(written.len())];
            let data = data_of(&types[ty], 7);
            reader.0.put(ty, *uuid, data.clone()).await.expect("edit");
            reader.0.sync_session(&reader.1, &hubsync_core::engine::NoProgress).await.expect("upload edit");
            writer.0.sync_session(&writer.1, &hubsync_core::engine::NoProgress).await.expect("download edit");
            prop_assert_eq!(&writer.0.get(ty, *uuid).await.expect("edited").data, &data);
            close(&master, &clients).await;
            Ok(())
        })?;
    }

    // Feature: sync-system, Property 17: For any synchronization attempt, schema version compatibility should be validated between nodes
    // Feature: sync-system, Property 18: For any outdated schema version, synchronization should be blocked
    // Feature: sync-system, Property 19: For any schema version mismatch, clear error messages should be provided
    // Feature: sync-system, Property 21: For any compatible schema versions, synchronization should proceed normally
    #[test]
    fn schema_versions_are_checked_on_every_exchange(
        (client_v, master_v) in version_pair(),
        brigades in 1usize..5,
        sites in 0usize..3,
    ) {
        block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let (master, clients) = nodes(dir.path(), &versioned(master_v), &[versioned(client_v)]).await;
            let (client, transport) = &clients[0];
            let master_id = master.identity().node_id;
            let mut ours = Vec::new();
            for i in 0..brigades {
                ours.push(client.create("Brigade", None, json!({"name": format!("b{i}")})).await.expect("create").uuid);
            }
            let mut theirs = Vec::new();
            for i in 0..sites {
                theirs.push(master.create("Site", None, json!({"name": format!("s{i}")})).await.expect("create").uuid);
            }
            let revisions = master.store().count_revisions_after(0, Uuid::nil()).await.expect("revisions");
            let result = client.sync_session(transport, &hubsync_core::engine::NoProgress).await;
            let (cv, mv) = (
                format!("{}.{}.{}", client_v.0, client_v.1, client_v.2),
                format!("{}.{}.{}", master_v.0, master_v.1, master_v.2),
            );
            if client_v.0 == master_v.0 {
                // Property 21: same MAJOR, whatever MINOR and PATCH: a
                // normal sync, both ways.
                let summary = result.map_err(|e| TestCaseError::fail(format!("{cv} against {mv}: {e}")))?;
                prop_assert_eq!(summary.sent_changes, brigades as u64);
                prop_assert_eq!(summary.received_changes, sites as u64);
                for u in &ours {
                    prop_assert!(master.get("Brigade", *u).await.is_ok());
                }
                for u in &theirs {
                    prop_assert!(client.get("Site", *u).await.is_ok());
                }
                prop_assert_eq!(client.store().count_queued(master_id).await.expect("queue"), 0);
            } else {
                // Properties 18 and 19: another MAJOR, older or newer: the
                // exchange is refused with a message naming both versions
                // and what to do, and nothing travels either way.
                let err = match result {
                    Ok(s) => return Err(TestCaseError::fail(format!("{cv} against {mv} synced: {s:?}"))),
                    Err(e) => e,
                };
                let EngineError::Transport(TransportError::Refused { status, error }) = &err else {
                    return Err(TestCaseError::fail(format!("{cv} against {mv}: not a refusal: {err}")));
                };
                prop_assert_eq!(*status, 409);
                prop_assert_eq!(error.code.as_str(), "schema_version_mismatch");
                prop_assert!(error.message.contains(&cv) && error.message.contains(&mv), "{}", error.message);
                let hint = error.hint.clone().unwrap_or_default();
                prop_assert!(hint.contains(&mv) && hint.contains("MAJOR"), "hint: {}", hint);
                prop_assert!(err.to_string().contains(&mv), "what the operator sees: {}", err);
                prop_assert_eq!(
                    master.store().count_revisions_after(0, Uuid::nil()).await.expect("revisions"),
                    revisions,
                    "nothing applied on the master"
                );
                for u in &ours {
                    prop_assert!(master.get("Brigade", *u).await.is_err());
                }
                for u in &theirs {
                    prop_assert!(client.get("Site", *u).await.is_err());
                }
                prop_assert_eq!(
                    client.store().count_queued(master_id).await.expect("queue"),
                    brigades as i64,
                    "the client keeps every change queued"
                );
                let row = master.store().get_node(transport.node_id).await.expect("row").expect("node row");
                prop_assert_eq!(row.received_packet_no, 0);
            }
            close(&master, &clients).await;
            Ok(())
        })?;
    }
}
