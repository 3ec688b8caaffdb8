//! File (sneakernet) exchange, contract §2: `hubsync export` writes the
//! next packet a node would send over the network into a sealed file, and
//! `hubsync import` receives such a file on the other side. Same packet
//! format, same numbering and acknowledgement rules as the network, so a
//! node without a network syncs by carrying files both ways, and a node may
//! mix files and network freely.
//!
//! Owns: the pipeline around the engine's file entry points —
//! export: envelope → gzip JSON (protocol codec) → [`sealed_file::seal`] →
//! atomic write (temporary file in the same directory, fsync, rename, fsync
//! of the directory); import: read (bounded) → check whom the file is for →
//! [`sealed_file::open`] with the pair's key → decode within the protocol
//! limits → header consistency → engine import (exactly once; `dry_run`
//! rolls back). Keys: the SHA-256 hash of the client node's token, which
//! the client derives from its token and the master stores per node, so
//! rotating a node's token invalidates every file sealed before.
//!
//! Concurrency with a running `hubsync serve`: on a **client** the commands
//! take the node's process lock (`.hubsync.lock`, the one `hubsync sync`
//! uses) and refuse while a serve holds it, because a file and a sync
//! session would both move the node's packet numbers. On a **master** they
//! take no lock: each export or import is one store transaction, which the
//! store serializes with the network exchanges exactly as it does for
//! several master hosts on one database (and for `hubsync node add` beside
//! a running master).
//!
//! Must never: apply anything of a file that does not authenticate, decode
//! or belong to this node; leave a half-written file under the name asked
//! for; put a token or its hash in an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use hubsync_core::engine::{ExchangeError, ImportReport};
use hubsync_core::protocol::{self, CodecError, DecodeLimits, Envelope};
use hubsync_core::store::{NodeRole, StoreError};
use hubsync_core::{Engine, EngineError};
use serde::Serialize;
use uuid::Uuid;

use crate::config::Config;
use crate::error::HostError;
use crate::node::Node;
use crate::progress::{ProgressReport, TerminalProgress, human_bytes};
use crate::sealed_file::{self, FileHeader, SealError};

/// Why an export or import failed. Messages say what, why and what to do,
/// and never contain a token or its hash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileExchangeError {
    /// The file was refused whole; nothing was applied.
    #[error("import refused, nothing was applied: {0}")]
    Refused(String),
    /// The command does not fit this node (mode, arguments, a serve running).
    #[error("{0}")]
    Usage(String),
    #[error("the packet file was refused, nothing was applied: {0}")]
    Seal(#[from] SealError),
    #[error("the master refused the packet file, nothing was applied: {message}")]
    Exchange { message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{what} {path}: {source}; check the path and its permissions")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<ExchangeError> for FileExchangeError {
    fn from(e: ExchangeError) -> Self {
        if let ExchangeError::Store(s) = e {
            return FileExchangeError::Store(s);
        }
        let mut message = e.to_string();
        if let Some(d) = e.detail() {
            message.push_str(&format!(" ({d})"));
        }
        if let Some(h) = e.hint() {
            message.push_str(&format!("; {h}"));
        }
        FileExchangeError::Exchange { message }
    }
}

impl From<FileExchangeError> for HostError {
    fn from(e: FileExchangeError) -> Self {
        match e {
            FileExchangeError::Engine(e) => HostError::Engine(e),
            FileExchangeError::Store(e) => HostError::Store(e),
            FileExchangeError::Config(e) => HostError::Config(e),
            other => HostError::Other(other.to_string()),
        }
    }
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> FileExchangeError {
    FileExchangeError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// What a packet file carries.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PacketSummary {
    pub from_node_id: Uuid,
    pub to_node_id: Uuid,
    /// The sender's packet number (a packet without changes repeats the
    /// last number: it only acknowledges).
    pub packet_no: i64,
    /// The recipient's packet that this file acknowledges.
    pub ack_packet_no: i64,
    /// Entity changes carried.
    pub changes: u64,
    /// Of which deletions.
    pub deletes: u64,
    /// Changes per entity type.
    pub by_type: BTreeMap<String, u64>,
    /// Master to client: outcomes of the client's acknowledged packet.
    pub results: u64,
    /// Of which conflicts (any outcome but applied and held).
    pub conflicts_in_results: u64,
    /// Master to client: more changes wait after this packet (export again
    /// after this one is imported and acknowledged).
    pub more: bool,
    pub remaining: Option<u64>,
    /// Size of the packet as JSON, before compression and sealing.
    pub packet_bytes: u64,
    /// Size of the file.
    pub file_bytes: u64,
    pub created_at: DateTime<Utc>,
}

impl PacketSummary {
    fn of(envelope: &Envelope, packet_bytes: usize, file_bytes: usize) -> Self {
        let mut by_type = BTreeMap::new();
        for c in &envelope.body.entities {
            *by_type.entry(c.entity_type.clone()).or_insert(0) += 1;
        }
        PacketSummary {
            from_node_id: envelope.header.sender_node_id,
            to_node_id: envelope.header.recipient_node_id,
            packet_no: envelope.header.packet_no,
            ack_packet_no: envelope.header.ack_packet_no,
            changes: envelope.body.entities.len() as u64,
            deletes: envelope
                .body
                .entities
                .iter()
                .filter(|c| c.is_deleted)
                .count() as u64,
            by_type,
            results: envelope.body.results.len() as u64,
            conflicts_in_results: envelope
                .body
                .results
                .iter()
                .filter(|r| r.outcome.is_conflict())
                .count() as u64,
            more: envelope.body.more,
            remaining: envelope.body.remaining,
            packet_bytes: packet_bytes as u64,
            file_bytes: file_bytes as u64,
            created_at: envelope.header.timestamp,
        }
    }

    /// One line: "packet 4 (acknowledges 3): 12 changes (2 deletions) — DailyReport 10, Site 2".
    pub fn describe(&self) -> String {
        let mut s = format!(
            "packet {} (acknowledges {}): {} change(s)",
            self.packet_no, self.ack_packet_no, self.changes
        );
        if self.deletes > 0 {
            s.push_str(&format!(" ({} deletion(s))", self.deletes));
        }
        if !self.by_type.is_empty() {
            let types: Vec<String> = self
                .by_type
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect();
            s.push_str(&format!(" — {}", types.join(", ")));
        }
        if self.results > 0 {
            s.push_str(&format!(
                "; outcomes of {} sent change(s), {} conflict(s)",
                self.results, self.conflicts_in_results
            ));
        }
        if self.more {
            s.push_str(&format!(
                "; more wait on the sender{}",
                self.remaining
                    .map(|n| format!(" (about {n})"))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

/// A sealed packet file, ready to write.
#[derive(Debug, Clone)]
pub struct PacketFile {
    pub bytes: Vec<u8>,
    pub summary: PacketSummary,
}

/// What importing a file did, or in a dry run would do.
#[derive(Debug, Clone, Serialize)]
pub struct ImportOutcome {
    pub packet: PacketSummary,
    pub report: ImportReport,
}

fn seal_envelope(envelope: &Envelope, token_hash: &str) -> Result<PacketFile, FileExchangeError> {
    let json = serde_json::to_vec(envelope).map_err(|e| {
        FileExchangeError::Usage(format!("could not encode the packet: {e}; report this bug"))
    })?;
    let plain = protocol::gzip(&json).map_err(|e| FileExchangeError::Usage(e.to_string()))?;
    let header = FileHeader {
        sender: envelope.header.sender_node_id,
        recipient: envelope.header.recipient_node_id,
        packet_no: envelope.header.packet_no,
        created_at: envelope.header.timestamp,
    };
    let bytes = sealed_file::seal(&plain, &header, token_hash)?;
    let summary = PacketSummary::of(envelope, json.len(), bytes.len());
    Ok(PacketFile { bytes, summary })
}

/// Decodes an opened file's plaintext and checks that the envelope says
/// what the authenticated file header says.
fn decode_opened(
    header: &FileHeader,
    plain: &[u8],
    file_len: usize,
    limits: DecodeLimits,
) -> Result<(Envelope, PacketSummary), FileExchangeError> {
    let envelope = protocol::decode_envelope(plain, limits).map_err(|e| match e {
        CodecError::CompressedTooLarge { .. } | CodecError::DecompressedTooLarge { .. } => {
            FileExchangeError::Refused(format!(
                "the packet in the file is larger than this node accepts ({e})"
            ))
        }
        other => FileExchangeError::Refused(format!(
            "the file authenticated but its packet does not decode ({other}); it was written by an incompatible hubsync — export it again with the same version on both sides"
        )),
    })?;
    let h = &envelope.header;
    if h.sender_node_id != header.sender
        || h.recipient_node_id != header.recipient
        || h.packet_no != header.packet_no
    {
        return Err(FileExchangeError::Refused(format!(
            "the file header (node {} to node {}, packet {}) disagrees with the packet inside it (node {} to node {}, packet {}); export it again",
            header.sender,
            header.recipient,
            header.packet_no,
            h.sender_node_id,
            h.recipient_node_id,
            h.packet_no
        )));
    }
    let json_len = serde_json::to_vec(&envelope).map_or(0, |v| v.len());
    let summary = PacketSummary::of(&envelope, json_len, file_len);
    Ok((envelope, summary))
}

/// Client: the next packet for the master as a sealed file (the packet in
/// flight again under its number, else a new packet of unsent changes —
/// which becomes in flight — else an acknowledgement only). `token` is the
/// client's own token.
pub async fn export_to_master(
    engine: &Engine,
    token: &str,
) -> Result<PacketFile, FileExchangeError> {
    let envelope = engine.export_packet().await?;
    seal_envelope(&envelope, &crate::auth::token_hash(token))
}

/// Client: imports a sealed file from the master, addressed to this node
/// and sealed with this node's token.
pub async fn import_from_master(
    engine: &Engine,
    token: &str,
    bytes: &[u8],
    limits: DecodeLimits,
    dry_run: bool,
) -> Result<ImportOutcome, FileExchangeError> {
    let me = engine.identity();
    let master = me.master_id.ok_or(EngineError::WrongRole {
        needed: "client",
        actual: me.role.as_str(),
    })?;
    let peeked = sealed_file::peek_header(bytes)?;
    if peeked.recipient != me.node_id {
        return Err(FileExchangeError::Refused(format!(
            "the file is addressed to node {}, not to this node ({}); import it on node {} (or, on the master, with `hubsync import` there if it is a client's file)",
            peeked.recipient, me.node_id, peeked.recipient
        )));
    }
    if peeked.sender != master {
        return Err(FileExchangeError::Refused(format!(
            "the file comes from node {}, but this client's master is {}; only files exported by its own master can be imported here",
            peeked.sender, master
        )));
    }
    let key = crate::auth::token_hash(token);
    let (header, plain) = sealed_file::open(bytes, |_| Some(key.clone()))?;
    let (envelope, packet) = decode_opened(&header, &plain, bytes.len(), limits)?;
    let report = engine
        .import_packet(&envelope, dry_run)
        .await
        .map_err(|e| match e {
            EngineError::Store(s) => FileExchangeError::Store(s),
            other => FileExchangeError::Refused(other.to_string()),
        })?;
    Ok(ImportOutcome { packet, report })
}

/// Master: the next packet for the node `code` as a file sealed with the
/// node's stored token hash. A revoked node gets no file.
pub async fn export_to_node(engine: &Engine, code: &str) -> Result<PacketFile, FileExchangeError> {
    let node = engine
        .store()
        .get_node_by_code(code)
        .await?
        .filter(|n| !n.is_self)
        .ok_or_else(|| EngineError::UnknownNode(code.to_string()))?;
    if node.revoked {
        return Err(FileExchangeError::Usage(format!(
            "node {code} is revoked: it gets no packets, by network or file; `hubsync node rotate-token {code}` re-admits it with a new token"
        )));
    }
    let hash = node.token_hash.clone().ok_or_else(|| {
        FileExchangeError::Usage(format!(
            "node {code} has no token on this master, so no file can be sealed for it; issue one with `hubsync node rotate-token {code}`"
        ))
    })?;
    let envelope = engine.export_for_node(code).await?;
    seal_envelope(&envelope, &hash)
}

/// Master: imports a sealed file from a registered, non-revoked node,
/// opened with that node's stored token hash.
pub async fn import_from_node(
    engine: &Engine,
    bytes: &[u8],
    limits: DecodeLimits,
    dry_run: bool,
) -> Result<ImportOutcome, FileExchangeError> {
    let me = engine.identity();
    if me.role != NodeRole::Master {
        return Err(EngineError::WrongRole {
            needed: "master",
            actual: me.role.as_str(),
        }
        .into());
    }
    let peeked = sealed_file::peek_header(bytes)?;
    if peeked.recipient != me.node_id {
        return Err(FileExchangeError::Refused(format!(
            "the file is addressed to node {}, not to this master ({}); import it on the node it was exported for",
            peeked.recipient, me.node_id
        )));
    }
    let sender = engine
        .store()
        .get_node(peeked.sender)
        .await?
        .filter(|n| !n.is_self);
    let Some(sender) = sender else {
        return Err(FileExchangeError::Refused(format!(
            "the file comes from node {}, which is not registered with this master; register the node (`hubsync node add`) or import the file on its own master",
            peeked.sender
        )));
    };
    if sender.revoked {
        return Err(FileExchangeError::Refused(format!(
            "the file comes from node {}, which is revoked; its files are no longer accepted (`hubsync node rotate-token {}` re-admits it, and it must export again)",
            sender.code, sender.code
        )));
    }
    let key = sender.token_hash.clone();
    let (header, plain) = sealed_file::open(bytes, |_| key.clone())?;
    let (envelope, packet) = decode_opened(&header, &plain, bytes.len(), limits)?;
    let report = engine.import_from_node(&envelope, dry_run).await?;
    Ok(ImportOutcome { packet, report })
}

/// Writes `bytes` to `path` so that `path` is either absent/unchanged or
/// complete: a temporary file in the same directory, fsync, rename, fsync
/// of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileExchangeError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".hubsync-export-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| io("could not create a temporary file in", &dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| io("could not write", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| io("could not flush", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| io("could not move the finished file to", path, e.error))?;
    #[cfg(unix)]
    {
        // The rename is durable only once the directory is.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads a packet file, refusing one larger than any packet file can be.
pub fn read_packet_file(path: &Path, limits: DecodeLimits) -> Result<Vec<u8>, FileExchangeError> {
    let max = limits.max_compressed + sealed_file::MIN_LEN;
    let len = std::fs::metadata(path)
        .map_err(|e| io("could not read", path, e))?
        .len();
    if len > max as u64 {
        return Err(FileExchangeError::Refused(format!(
            "{} is {len} bytes, larger than any packet file this node accepts ({max} bytes); check that it is a file `hubsync export` wrote",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| io("could not read", path, e))
}

/// The decode limits for packet files: the protocol's defaults.
pub fn file_limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// On a client, the node's process lock (refusing while a serve holds it);
/// on a master, nothing (see the module documentation).
fn lock_for(config: &Config, what: &str) -> Result<Option<std::fs::File>, HostError> {
    if config.mode == crate::config::Mode::Master {
        return Ok(None);
    }
    match crate::serve::try_lock(config)? {
        Some(lock) => Ok(Some(lock)),
        None => Err(FileExchangeError::Usage(format!(
            "cannot {what} now: a running `hubsync serve` holds this client (lock {}), and a file {what} beside its sync sessions would move the same packet numbers; stop that serve (Ctrl-C), run the {what}, then start it again — nothing was changed",
            crate::serve::lock_path(config).display()
        ))
        .into()),
    }
}

/// `hubsync export`: returns the JSON document and the text to print.
pub async fn export_command(
    config: Config,
    out: &Path,
    node_code: Option<&str>,
    show_progress: bool,
) -> Result<(serde_json::Value, String), HostError> {
    let is_master = config.mode == crate::config::Mode::Master;
    match (is_master, node_code) {
        (false, Some(_)) => {
            return Err(FileExchangeError::Usage(
                "--node is for a master (which exports to one of its nodes); a client always exports to its master — drop --node".into(),
            )
            .into());
        }
        (true, None) => {
            return Err(FileExchangeError::Usage(
                "a master exports to one node at a time: give --node CODE (`hubsync node list` shows the codes)".into(),
            )
            .into());
        }
        _ => {}
    }
    let _lock = lock_for(&config, "export")?;
    let bar = TerminalProgress::new("export", show_progress);
    let node = Node::open(config).await?;
    let result = async {
        let file = match node_code {
            Some(code) => export_to_node(&node.engine, code).await?,
            None => export_to_master(&node.engine, &node.config.master_token()?).await?,
        };
        write_atomically(out, &file.bytes)?;
        Ok::<_, FileExchangeError>(file)
    }
    .await;
    node.engine.store().close().await;
    let file = result;
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            bar.finish();
            return Err(e.into());
        }
    };
    let s = &file.summary;
    bar.show(&transfer_report(s.changes, s.file_bytes, 0), "");
    bar.finish();
    let to = node_code.map_or_else(|| "the master".to_string(), |c| format!("node {c}"));
    let mut text = format!(
        "exported {} for {to} to {} ({})\n",
        s.describe(),
        out.display(),
        human_bytes(s.file_bytes)
    );
    text.push_str(
        "carry it to the recipient and run `hubsync import` there; until it is imported and acknowledged, exporting again resends the same packet\n",
    );
    let mut doc = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = doc.as_object_mut() {
        o.insert("file".into(), out.display().to_string().into());
    }
    Ok((doc, text))
}

/// `hubsync import`: returns the JSON document and the text to print.
pub async fn import_command(
    config: Config,
    file: &Path,
    dry_run: bool,
    show_progress: bool,
) -> Result<(serde_json::Value, String), HostError> {
    let _lock = lock_for(&config, "import")?;
    let limits = file_limits();
    let bytes = read_packet_file(file, limits)?;
    let bar = TerminalProgress::new("import", show_progress);
    bar.show(&transfer_report(0, 0, bytes.len() as u64), "");
    let node = Node::open(config).await?;
    let result = if node.is_client() {
        match node.config.master_token() {
            Ok(token) => import_from_master(&node.engine, &token, &bytes, limits, dry_run).await,
            Err(e) => Err(e.into()),
        }
    } else {
        import_from_node(&node.engine, &bytes, limits, dry_run).await
    };
    node.engine.store().close().await;
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            bar.finish();
            return Err(e.into());
        }
    };
    let done = outcome.packet.changes;
    let mut r = transfer_report(done, 0, bytes.len() as u64);
    r.total = done;
    bar.show(&r, "");
    bar.finish();
    let text = import_text(file, &outcome);
    Ok((serde_json::to_value(&outcome).unwrap_or_default(), text))
}

fn transfer_report(done: u64, sent: u64, received: u64) -> ProgressReport {
    ProgressReport {
        done,
        total: done,
        bytes_sent: sent,
        bytes_received: received,
        started_at: Utc::now(),
        ..ProgressReport::default()
    }
}

/// The human account of an import.
pub fn import_text(file: &Path, o: &ImportOutcome) -> String {
    let r = &o.report;
    let (verb, applied, kept) = if r.dry_run {
        ("would apply", "would be", "would stay")
    } else {
        ("applied", "were", "stayed")
    };
    let mut s = format!(
        "{}{} from {}: {}\n",
        if r.dry_run {
            "dry run, nothing changed — "
        } else {
            ""
        },
        file.display(),
        r.from,
        o.packet.describe()
    );
    if !r.new_packet && o.packet.changes > 0 {
        s.push_str(&format!(
            "packet {} had been received already: its changes {applied} not applied again\n",
            r.packet_no
        ));
    } else {
        s.push_str(&format!("{verb} {} change(s)", r.applied));
        if r.held > 0 {
            s.push_str(&format!(
                ", {} held until what they reference arrives",
                r.held
            ));
        }
        if r.kept_local > 0 {
            s.push_str(&format!(
                ", {} incoming version(s) {kept} behind local changes still queued (the master decides)",
                r.kept_local
            ));
        }
        s.push('\n');
    }
    if !r.conflicts.is_empty() {
        s.push_str(&format!("{} conflict(s):\n", r.conflicts.len()));
        for c in &r.conflicts {
            s.push_str(&format!(
                "  {} {} {} (revision {})\n",
                c.entity_type,
                c.uuid,
                c.outcome.as_str(),
                c.rev
            ));
        }
    }
    s
}
