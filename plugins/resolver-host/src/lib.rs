//! The host side of the resolver C ABI: loading a plugin library, checking
//! it, and calling it.
//!
//! Owns: every check a library must pass before a host uses it (the file
//! exists, is a shared library, exports the entry symbol, speaks our ABI
//! version with a table at least as large as ours, was built with
//! `panic = "unwind"`, describes itself with a valid manifest, and its name
//! is free), the process-lifetime registry of loaded libraries, and the
//! synchronous call across the ABI (JSON in, status + JSON out, buffer
//! given back to the plugin's `free`).
//!
//! Must never: unload a library (a table, a string or a thread inside it
//! may still be in use — libraries are deliberately leaked and live until
//! the process exits), free a plugin buffer with the host's allocator, or
//! know anything about the engine (the hubsync host adapts [`Plugin`] to
//! its `ConflictResolver`; the testkit calls it directly). Both use this
//! crate, so `hubsync plugin check`, the master and the resolver laws see
//! exactly the same loader.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hubsync_resolver_api::abi::{
    ABI_VERSION, ENTRY_SYMBOL, ENTRY_V1_SIZE, OwnedBuf, ResolverEntryV1, STATUS_BAD_INPUT,
    STATUS_ERROR, STATUS_NOT_INITIALISED, STATUS_OK, STATUS_PANIC,
};
use hubsync_resolver_api::{ConflictInput, Decision, Manifest};

/// Why a library was refused. Every message says what failed, why, and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error(
        "cannot load resolver plugin {path}: the file does not exist or cannot be read ({reason}). Check the [[plugins]] path (a relative path is resolved against the config file's directory) and build the plugin (`cargo build --release` in its crate puts lib<name>.so under target/release/)"
    )]
    Missing { path: String, reason: String },
    #[error(
        "cannot load resolver plugin {path}: it is not a loadable shared library ({reason}). Point the [[plugins]] path at the plugin's cdylib (lib<name>.so on Linux, <name>.dll on Windows, lib<name>.dylib on macOS), built for this machine"
    )]
    NotALibrary { path: String, reason: String },
    #[error(
        "cannot load resolver plugin {path}: the library does not export `{symbol}`, so it is not a hubsync resolver plugin. Export a resolver with `hubsync_resolver_api::declare_resolver!(YourResolver);` in a crate with crate-type = [\"cdylib\"] (hubsync's own built-in strategy crates export it only when built with `--features export`)"
    )]
    NotAResolver { path: String, symbol: String },
    #[error(
        "cannot load resolver plugin {path}: its entry function returned no table: the resolver's constructor or manifest() panicked, or its manifest could not be serialized. Run the plugin's own tests (hubsync-resolver-testkit's assert_resolver_laws) to see why"
    )]
    InitFailed { path: String },
    #[error(
        "cannot load resolver plugin {path}: it was built for resolver ABI version {found}, but this hubsync speaks version {expected}. Rebuild the plugin against a hubsync-resolver-api with ABI version {expected}, or run a hubsync that speaks version {found} (docs/plugins.md, Versioning)"
    )]
    WrongAbi {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error(
        "cannot load resolver plugin {path}: its ABI table is {found} bytes, smaller than the {expected} bytes of ABI version {abi}; the plugin was built against a broken or foreign resolver API. Rebuild it against a released hubsync-resolver-api"
    )]
    WrongSize {
        path: String,
        found: u32,
        expected: u32,
        abi: u32,
    },
    #[error(
        "cannot load resolver plugin {path}: it was built with panic = \"abort\", so one panic in the resolver would abort the whole master instead of deferring one conflict. Build it with panic = \"unwind\" (the default: remove `panic = \"abort\"` from the [profile] it is built with)"
    )]
    PanicAbort { path: String },
    #[error(
        "cannot load resolver plugin {path}: its manifest is unusable: {reason}. Fix the plugin's Resolver::manifest()"
    )]
    BadManifest { path: String, reason: String },
    #[error(
        "cannot load resolver plugin {path}: its resolver name '{name}' is already taken by {taken_by}. Give the plugin's resolver another name (Manifest::name) or remove one of the two from [[plugins]]"
    )]
    NameTaken {
        path: String,
        name: String,
        taken_by: String,
    },
}

impl LoadError {
    /// A stable classifier, e.g. for `hubsync plugin check --json`.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Missing { .. } => "missing",
            LoadError::NotALibrary { .. } => "not_a_library",
            LoadError::NotAResolver { .. } => "not_a_resolver",
            LoadError::InitFailed { .. } => "init_failed",
            LoadError::WrongAbi { .. } => "wrong_abi_version",
            LoadError::WrongSize { .. } => "wrong_struct_size",
            LoadError::PanicAbort { .. } => "panic_abort",
            LoadError::BadManifest { .. } => "bad_manifest",
            LoadError::NameTaken { .. } => "name_taken",
        }
    }
}

/// Why one call into a plugin failed. The host turns any of these into a
/// deferred conflict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("the resolver returned an error: {0}")]
    Failed(String),
    #[error("the resolver panicked: {0}")]
    Panicked(String),
    #[error("the plugin could not read the conflict input: {0}")]
    BadInput(String),
    #[error("the plugin's resolver was never constructed (its constructor panicked)")]
    NotInitialised,
    #[error("the plugin answered something that is not a decision: {0}")]
    BadOutput(String),
    #[error("the plugin returned unknown status {status}: {message}")]
    UnknownStatus { status: i32, message: String },
    #[error("the conflict input could not be encoded: {0}")]
    Encode(String),
}

/// A loaded, checked resolver plugin. Lives as long as the process.
pub struct Plugin {
    path: PathBuf,
    manifest: Manifest,
    table: &'static ResolverEntryV1,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .finish()
    }
}

// SAFETY: the table is immutable and 'static (the library is never
// unloaded), and the ABI requires `describe`/`resolve`/`free` to be callable
// from any thread, concurrently.
unsafe impl Send for Plugin {}
// SAFETY: as above.
unsafe impl Sync for Plugin {}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ABI version the plugin speaks (the one this host checked).
    pub fn abi_version(&self) -> u32 {
        self.table.abi_version
    }

    /// Decides one conflict, synchronously, on the calling thread. Bound it
    /// with a timeout on another thread: a plugin may hang.
    pub fn resolve(&self, input: &ConflictInput) -> Result<Decision, CallError> {
        let json = serde_json::to_vec(input).map_err(|e| CallError::Encode(e.to_string()))?;
        let answer = self.resolve_json(&json)?;
        serde_json::from_slice(&answer).map_err(|e| CallError::BadOutput(e.to_string()))
    }

    /// The raw call: conflict input JSON in, decision JSON out.
    pub fn resolve_json(&self, input: &[u8]) -> Result<Vec<u8>, CallError> {
        let mut out = OwnedBuf::empty();
        // SAFETY: `input` is readable for its length, `out` is a valid
        // out-pointer, and the table passed the checks in `check_table`.
        let status = unsafe { (self.table.resolve)(input.as_ptr(), input.len(), &mut out) };
        // SAFETY: the plugin's buffer is valid until we give it back.
        let bytes = unsafe { take_buffer(self.table, out) };
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match status {
            STATUS_OK => Ok(bytes),
            STATUS_ERROR => Err(CallError::Failed(text())),
            STATUS_PANIC => Err(CallError::Panicked(text())),
            STATUS_BAD_INPUT => Err(CallError::BadInput(text())),
            STATUS_NOT_INITIALISED => Err(CallError::NotInitialised),
            status => Err(CallError::UnknownStatus {
                status,
                message: text(),
            }),
        }
    }
}

/// Copies a plugin buffer and gives it back to the plugin's `free`.
///
/// # Safety
/// `out` must have been filled by the plugin behind `table` (or be empty).
unsafe fn take_buffer(table: &ResolverEntryV1, out: OwnedBuf) -> Vec<u8> {
    if out.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the plugin wrote `len` bytes at `ptr` (ABI contract).
    let bytes = unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec();
    // SAFETY: returned to the allocator that made it, once.
    unsafe { (table.free)(out) };
    bytes
}

/// Loaded libraries by canonical path: loading the same file twice (a
/// second node in one process, `plugin check` then `serve` in tests)
/// returns the same plugin instead of leaking another handle.
static LOADED: Mutex<Option<HashMap<PathBuf, Arc<Plugin>>>> = Mutex::new(None);

/// Loads and checks the plugin at `path` (cached for the process's life).
pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
    let shown = path.display().to_string();
    let canonical = std::fs::canonicalize(path).map_err(|e| LoadError::Missing {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if let Ok(guard) = LOADED.lock()
        && let Some(p) = guard.as_ref().and_then(|m| m.get(&canonical))
    {
        return Ok(p.clone());
    }
    let plugin = Arc::new(load_uncached(&canonical, &shown, ENTRY_SYMBOL)?);
    if let Ok(mut guard) = LOADED.lock() {
        guard
            .get_or_insert_with(HashMap::new)
            .insert(canonical, plugin.clone());
    }
    Ok(plugin)
}

/// Loads every plugin in `paths`, refusing a name already taken by one of
/// `taken` (name, what holds it — e.g. "the built-in strategy") or by an
/// earlier plugin of the list. Reports every problem at once.
pub fn load_all(
    paths: &[PathBuf],
    taken: &[(String, String)],
) -> Result<Vec<Arc<Plugin>>, Vec<LoadError>> {
    let mut names: HashMap<String, String> = taken.iter().cloned().collect();
    let mut plugins = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match load(path) {
            Ok(p) => {
                if let Some(by) = names.get(p.name()) {
                    errors.push(LoadError::NameTaken {
                        path: path.display().to_string(),
                        name: p.name().to_string(),
                        taken_by: by.clone(),
                    });
                } else {
                    names.insert(
                        p.name().to_string(),
                        format!("the plugin {}", path.display()),
                    );
                    plugins.push(p);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(plugins)
    } else {
        Err(errors)
    }
}

/// Test hook: loads `path` through another entry symbol, uncached (the
/// ABI fixture library exports broken tables under test-only names).
#[doc(hidden)]
pub fn load_with_symbol(path: &Path, symbol: &str) -> Result<Plugin, LoadError> {
    load_uncached(path, &path.display().to_string(), symbol)
}

fn load_uncached(path: &Path, shown: &str, symbol: &str) -> Result<Plugin, LoadError> {
    std::fs::metadata(path).map_err(|e| LoadError::Missing {
        path: shown.to_string(),
        reason: e.to_string(),
    })?;
    // SAFETY: loading a library runs its initialisers; that is what
    // configuring a plugin asks for. The handle is leaked on purpose: a
    // library is never unloaded (see the module docs).
    let library: &'static libloading::Library = match unsafe { libloading::Library::new(path) } {
        Ok(lib) => Box::leak(Box::new(lib)),
        Err(e) => {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                source = s.source();
            }
            return Err(LoadError::NotALibrary {
                path: shown.to_string(),
                reason,
            });
        }
    };
    type EntryFn = unsafe extern "C" fn() -> *const ResolverEntryV1;
    let entry = {
        // SAFETY: the symbol is declared by the ABI with this signature.
        let found = unsafe { library.get::<EntryFn>(symbol.as_bytes()) };
        match found {
            Ok(f) => *f,
            Err(_) => {
                // A plugin of another ABI version exports another symbol:
                // name the version rather than "not a resolver".
                for v in (1..=8).filter(|v| *v != ABI_VERSION) {
                    let other = format!("hubsync_resolver_entry_v{v}");
                    // SAFETY: only the presence of the symbol is checked.
                    if unsafe { library.get::<EntryFn>(other.as_bytes()) }.is_ok() {
                        return Err(LoadError::WrongAbi {
                            path: shown.to_string(),
                            found: v,
                            expected: ABI_VERSION,
                        });
                    }
                }
                return Err(LoadError::NotAResolver {
                    path: shown.to_string(),
                    symbol: symbol.to_string(),
                });
            }
        }
    };
    // SAFETY: the entry function takes nothing and returns a pointer.
    let ptr = unsafe { entry() };
    if ptr.is_null() {
        return Err(LoadError::InitFailed {
            path: shown.to_string(),
        });
    }
    // SAFETY: every ABI version starts with two u32s, abi_version and
    // struct_size; nothing else is read before both are checked.
    let (abi_version, struct_size) = unsafe {
        let words = ptr.cast::<u32>();
        (words.read_unaligned(), words.add(1).read_unaligned())
    };
    if abi_version != ABI_VERSION {
        return Err(LoadError::WrongAbi {
            path: shown.to_string(),
            found: abi_version,
            expected: ABI_VERSION,
        });
    }
    if struct_size < ENTRY_V1_SIZE {
        return Err(LoadError::WrongSize {
            path: shown.to_string(),
            found: struct_size,
            expected: ENTRY_V1_SIZE,
            abi: ABI_VERSION,
        });
    }
    // SAFETY: version and size checked; the table is 'static in a library
    // that is never unloaded.
    let table: &'static ResolverEntryV1 = unsafe { &*ptr };
    if table.panic_unwind != 1 {
        return Err(LoadError::PanicAbort {
            path: shown.to_string(),
        });
    }
    let manifest = describe(table).map_err(|reason| LoadError::BadManifest {
        path: shown.to_string(),
        reason,
    })?;
    // SAFETY: the table's strings are 'static UTF-8 bytes (ABI contract);
    // checked as UTF-8 before use.
    let table_name = unsafe { static_str(table.name.ptr, table.name.len) };
    if table_name.as_deref() != Some(manifest.name.as_str()) {
        return Err(LoadError::BadManifest {
            path: shown.to_string(),
            reason: format!(
                "the table's name {:?} differs from the manifest's {:?}",
                table_name.unwrap_or_default(),
                manifest.name
            ),
        });
    }
    Ok(Plugin {
        path: path.to_path_buf(),
        manifest,
        table,
    })
}

/// # Safety
/// `ptr` must be null or point to `len` readable bytes.
unsafe fn static_str(ptr: *const u8, len: usize) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: caller's contract.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

fn describe(table: &ResolverEntryV1) -> Result<Manifest, String> {
    let mut out = OwnedBuf::empty();
    // SAFETY: `out` is a valid out-pointer; the table passed the checks.
    let status = unsafe { (table.describe)(&mut out) };
    // SAFETY: filled by this plugin.
    let bytes = unsafe { take_buffer(table, out) };
    if status != STATUS_OK {
        return Err(format!(
            "describe() returned status {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| format!("describe() returned something that is not a manifest: {e}"))?;
    check_name(&manifest.name)?;
    if manifest.version.trim().is_empty() {
        return Err("its version is empty".into());
    }
    Ok(manifest)
}

/// Resolver names: lowercase ASCII letters, digits and `-`, starting with
/// a letter (they are written in TOML and schemas).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "its name {name:?} is not lowercase letters, digits and '-' starting with a letter"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_refused_naming_the_path() {
        let e = load(Path::new("/nonexistent/libnothing.so")).unwrap_err();
        assert_eq!(e.kind(), "missing");
        assert!(e.to_string().contains("/nonexistent/libnothing.so"), "{e}");
    }

    #[test]
    fn a_text_file_is_not_a_library() {
        let dir = std::env::temp_dir().join(format!("hubsync-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.so");
        std::fs::write(&f, "not a library").unwrap();
        let e = load(&f).unwrap_err();
        assert_eq!(e.kind(), "not_a_library", "{e}");
        assert!(
            e.to_string().contains("not a loadable shared library"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn names_are_lowercase_words() {
        assert!(check_name("merge-report-lines").is_ok());
        assert!(check_name("Server-Wins").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("1x").is_err());
    }
}
