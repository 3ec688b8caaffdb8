// A master and clients as bare engines on SQLite files, with real tokens,
// so that packets can travel both by the in-memory network (the real codec)
// and by sealed files (host::file_exchange). Included by the file exchange
// tests and properties.

#[allow(dead_code)]
mod world {
    use std::collections::BTreeSet;

    use hubsync::file_exchange::{
        self, ImportOutcome, PacketFile, export_to_master, export_to_node, file_limits,
    };
    use hubsync_core::conflict::ConflictPolicy;
    use hubsync_core::engine::{NoProgress, Progress, SyncSummary};
    use hubsync_core::store::NodeRole;
    use hubsync_core::{Engine, EngineOptions, InitParams, PacketLimits};
    use hubsync_tests::{MemoryTransport, registry};
    use serde_json::Value;
    use uuid::Uuid;

    pub struct Client {
        pub engine: Engine,
        pub transport: MemoryTransport,
        pub code: String,
        pub token: String,
    }

    pub struct World {
        pub dir: tempfile::TempDir,
        pub master: Engine,
        pub clients: Vec<Client>,
    }

    /// Options with packets of at most `max_entities` changes.
    pub fn options(max_entities: u32) -> EngineOptions {
        EngineOptions {
            limits: PacketLimits {
                max_entities,
                ..PacketLimits::default()
            },
            ..EngineOptions::default()
        }
    }

    /// A replica without timestamps: (type, uuid, deleted, data), for
    /// comparing two worlds that ran the same script at different times.
    pub type Content = BTreeSet<(String, Uuid, bool, String)>;

    pub async fn content(e: &Engine) -> Content {
        e.replica_state()
            .await
            .expect("replica state")
            .into_iter()
            .map(|(t, u, _, d, data)| (t, u, d, data.to_string()))
            .collect()
    }

    impl World {
        pub async fn new(clients: usize, options: EngineOptions) -> World {
            let dir = tempfile::tempdir().expect("temp dir");
            let reg = registry();
            let open = |name: &str| {
                let url = format!("sqlite://{}", dir.path().join(name).display());
                async move { hubsync::storage::open_store(&url).await.expect("store") }
            };
            let master_store = open("master.db").await;
            let master_id = Uuid::now_v7();
            Engine::initialize(
                master_store.as_ref(),
                &InitParams {
                    role: NodeRole::Master,
                    node_id: master_id,
                    code: "MASTER".into(),
                    name: "master".into(),
                    master_id: None,
                },
            )
            .await
            .expect("master initialized");
            let master = Engine::open(
                master_store,
                reg.clone(),
                ConflictPolicy::server_wins(),
                options.clone(),
            )
            .await
            .expect("master opens");
            let mut out = Vec::new();
            for i in 0..clients {
                let code = format!("C{i}");
                let token = hubsync::auth::new_token(master_id).expect("token");
                let rec = master
                    .add_node(&code, &code, &hubsync::auth::token_hash(&token))
                    .await
                    .expect("node added");
                let store = open(&format!("client{i}.db")).await;
                Engine::initialize(
                    store.as_ref(),
                    &InitParams {
                        role: NodeRole::Client,
                        node_id: rec.id,
                        code: code.clone(),
                        name: code.clone(),
                        master_id: Some(master_id),
                    },
                )
                .await
                .expect("client initialized");
                let engine = Engine::open(
                    store,
                    reg.clone(),
                    ConflictPolicy::server_wins(),
                    options.clone(),
                )
                .await
                .expect("client opens");
                out.push(Client {
                    engine,
                    transport: MemoryTransport {
                        master: master.clone(),
                        node_id: rec.id,
                    },
                    code,
                    token,
                });
            }
            World {
                dir,
                master,
                clients: out,
            }
        }

        pub fn client(&self, i: usize) -> &Engine {
            &self.clients[i].engine
        }

        /// One network session of client `i`.
        pub async fn sync(&self, i: usize) -> SyncSummary {
            self.sync_with(i, &NoProgress).await
        }

        pub async fn sync_with(&self, i: usize, progress: &dyn Progress) -> SyncSummary {
            let c = &self.clients[i];
            c.engine
                .sync_session(&c.transport, progress)
                .await
                .unwrap_or_else(|e| panic!("network sync of client {i}: {e}"))
        }

        /// Client `i` exports its next packet file.
        pub async fn export_client(&self, i: usize) -> PacketFile {
            let c = &self.clients[i];
            export_to_master(&c.engine, &c.token)
                .await
                .unwrap_or_else(|e| panic!("export of client {i}: {e}"))
        }

        /// The master exports its next packet file for client `i`.
        pub async fn export_master(&self, i: usize) -> PacketFile {
            export_to_node(&self.master, &self.clients[i].code)
                .await
                .unwrap_or_else(|e| panic!("master export for client {i}: {e}"))
        }

        pub async fn import_master(
            &self,
            bytes: &[u8],
            dry_run: bool,
        ) -> Result<ImportOutcome, file_exchange::FileExchangeError> {
            file_exchange::import_from_node(&self.master, bytes, file_limits(), dry_run).await
        }

        pub async fn import_client(
            &self,
            i: usize,
            bytes: &[u8],
            dry_run: bool,
        ) -> Result<ImportOutcome, file_exchange::FileExchangeError> {
            let c = &self.clients[i];
            file_exchange::import_from_master(&c.engine, &c.token, bytes, file_limits(), dry_run)
                .await
        }

        /// One trip by files: client `i` → file → master → file → client
        /// `i`. Returns what moved (changes in both files, and whether the
        /// master said more waits).
        pub async fn file_round(&self, i: usize) -> (ImportOutcome, ImportOutcome) {
            let up = self.export_client(i).await;
            let at_master = self
                .import_master(&up.bytes, false)
                .await
                .unwrap_or_else(|e| panic!("master import from client {i}: {e}"));
            let down = self.export_master(i).await;
            let at_client = self
                .import_client(i, &down.bytes, false)
                .await
                .unwrap_or_else(|e| panic!("client {i} import: {e}"));
            (at_master, at_client)
        }

        /// File rounds until one moves nothing; panics after `max` rounds.
        pub async fn files_until_quiet(&self, i: usize, max: usize) -> usize {
            for round in 1..=max {
                let (up, down) = self.file_round(i).await;
                let moved = (up.report.new_packet && up.packet.changes > 0)
                    || (down.report.new_packet && down.packet.changes > 0)
                    || down.packet.more;
                if !moved {
                    return round;
                }
            }
            panic!("client {i}: file rounds still moved changes after {max} rounds");
        }

        /// Network sessions of every client until a pass moves nothing.
        pub async fn network_until_quiet(&self, max: usize) {
            for _ in 0..max {
                let mut moved = false;
                for i in 0..self.clients.len() {
                    let s = self.sync(i).await;
                    moved |= s.sent_changes > 0
                        || s.received_changes > 0
                        || s.kept_local > 0
                        || !s.conflicts.is_empty();
                }
                if !moved {
                    return;
                }
            }
            panic!("the network did not become quiet in {max} passes");
        }

        /// File rounds of every client until a pass moves nothing.
        pub async fn all_files_until_quiet(&self, max: usize) {
            for _ in 0..max {
                let mut moved = false;
                for i in 0..self.clients.len() {
                    moved |= self.files_until_quiet(i, max).await > 1;
                }
                if !moved {
                    return;
                }
            }
            panic!("file rounds did not become quiet in {max} passes");
        }

        /// Every client holds exactly the master's state.
        pub async fn assert_converged(&self) {
            let master = self.master.replica_state().await.expect("master state");
            for (i, c) in self.clients.iter().enumerate() {
                assert_eq!(
                    c.engine.replica_state().await.expect("client state"),
                    master,
                    "client {i} does not hold the master's state"
                );
            }
        }

        pub async fn close(self) {
            for c in &self.clients {
                c.engine.store().close().await;
            }
            self.master.store().close().await;
        }
    }

    /// The entities of `value`'s type and data, for creating.
    pub fn brigade(name: &str) -> Value {
        serde_json::json!({ "name": name })
    }
}
