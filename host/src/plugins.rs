//! The conflict strategies this host offers: the built-in strategy crates
//! (linked in as rlibs) and the resolver plugins named in `[[plugins]]`
//! (loaded at start by `hubsync-resolver-host`, the same loader
//! `hubsync plugin check` and the resolver testkit use), each adapted to
//! the engine's [`ConflictResolver`].
//!
//! Owns: the list of built-ins, the adapter (engine input → resolver API
//! input → engine decision, shared by built-ins and plugins), and running
//! plugin calls off the async runtime with a timeout.
//!
//! Must never: let a plugin's failure, panic or hang escape as anything
//! but an error for that one conflict (the engine then defers it: the
//! master's version stands, the incoming one goes to the history, the
//! audit says `conflict_deferred`); unload a library.
//!
//! Why plain threads rather than `spawn_blocking`: a hung plugin call never
//! returns, and a tokio runtime waits for its blocking tasks when it shuts
//! down, so one hung plugin would keep the host from stopping. A detached
//! thread per call is abandoned on timeout instead; at most
//! [`MAX_IN_FLIGHT`] calls per plugin may be running at once (hung ones
//! included), beyond that conflicts are deferred at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hubsync_core::conflict::{
    ConflictInput, ConflictResolver, Decision, ResolveError, UnknownStrategy, Version,
};
use hubsync_core::entity::format_ts;
use hubsync_resolver_api as api;
use hubsync_resolver_host::{LoadError, Plugin};
use serde_json::{Map, Value};

/// Plugin calls of one plugin that may run at once (hung ones included).
pub const MAX_IN_FLIGHT: usize = 16;

/// The built-in strategies, linked into the host.
pub fn builtin_strategies() -> Vec<Arc<dyn api::Resolver>> {
    vec![
        Arc::new(hubsync_resolver_server_wins::ServerWins),
        Arc::new(hubsync_resolver_client_wins::ClientWins),
        Arc::new(hubsync_resolver_last_writer_wins::LastWriterWins),
        Arc::new(hubsync_resolver_field_merge::FieldMerge),
        Arc::new(hubsync_resolver_manual::Manual),
    ]
}

/// Options per resolver name (`[conflicts.options.<name>]`).
pub type ResolverOptions = BTreeMap<String, Map<String, Value>>;

/// A problem with the strategies a configuration asks for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Unknown(#[from] UnknownStrategy),
    #[error("[conflicts.options.{resolver}]: {message}")]
    Option { resolver: String, message: String },
}

/// Every strategy the host offers: built-ins and the plugins of `paths`,
/// adapted for the engine. Reports every problem at once.
pub fn offered_strategies(
    paths: &[PathBuf],
    timeout: Duration,
    options: &ResolverOptions,
) -> Result<Vec<Arc<dyn ConflictResolver>>, Vec<StrategyError>> {
    let builtins = builtin_strategies();
    let taken: Vec<(String, String)> = builtins
        .iter()
        .map(|b| (b.manifest().name, "a built-in strategy".to_string()))
        .collect();
    let plugins = hubsync_resolver_host::load_all(paths, &taken).map_err(|errs| {
        errs.into_iter()
            .map(StrategyError::from)
            .collect::<Vec<_>>()
    })?;
    let mut errors = Vec::new();
    let mut out: Vec<Arc<dyn ConflictResolver>> = Vec::new();
    let mut manifests = Vec::new();
    for b in builtins {
        let m = b.manifest();
        let opts = options.get(&m.name).cloned().unwrap_or_default();
        out.push(Arc::new(HostedResolver::linked(b, opts)));
        manifests.push(m);
    }
    for p in plugins {
        let m = p.manifest().clone();
        let opts = options.get(&m.name).cloned().unwrap_or_default();
        out.push(Arc::new(HostedResolver::plugin(p, timeout, opts)));
        manifests.push(m);
    }
    for (resolver, opts) in options {
        let Some(m) = manifests.iter().find(|m| &m.name == resolver) else {
            errors.push(StrategyError::Option {
                resolver: resolver.clone(),
                message: format!(
                    "no strategy is called '{resolver}'; available: {}",
                    manifests
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            continue;
        };
        for (key, value) in opts {
            match m.options.iter().find(|o| &o.name == key) {
                None => errors.push(StrategyError::Option {
                    resolver: resolver.clone(),
                    message: format!(
                        "'{resolver}' has no option '{key}'; it declares: {}",
                        if m.options.is_empty() {
                            "none".to_string()
                        } else {
                            m.options
                                .iter()
                                .map(|o| o.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                }),
                Some(spec) if !spec.allowed.is_empty() && !spec.allowed.contains(value) => errors
                    .push(StrategyError::Option {
                        resolver: resolver.clone(),
                        message: format!(
                            "{key} = {value} is not allowed; use one of {}",
                            spec.allowed
                                .iter()
                                .map(Value::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }),
                Some(_) => {}
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

enum Backend {
    /// A built-in: trusted, fast, called inline (panics still caught).
    Linked(Arc<dyn api::Resolver>),
    /// A loaded plugin: called on its own thread with a timeout.
    Plugin {
        plugin: Arc<Plugin>,
        timeout: Duration,
        in_flight: Arc<AtomicUsize>,
    },
}

/// A resolver (built-in or plugin) as the engine sees it.
pub struct HostedResolver {
    name: String,
    backend: Backend,
    options: Map<String, Value>,
}

impl HostedResolver {
    pub fn linked(resolver: Arc<dyn api::Resolver>, options: Map<String, Value>) -> HostedResolver {
        HostedResolver {
            name: resolver.manifest().name,
            backend: Backend::Linked(resolver),
            options,
        }
    }

    pub fn plugin(
        plugin: Arc<Plugin>,
        timeout: Duration,
        options: Map<String, Value>,
    ) -> HostedResolver {
        HostedResolver {
            name: plugin.name().to_string(),
            backend: Backend::Plugin {
                plugin,
                timeout,
                in_flight: Arc::new(AtomicUsize::new(0)),
            },
            options,
        }
    }

    fn error(&self, reason: impl Into<String>) -> ResolveError {
        ResolveError {
            resolver: self.name.clone(),
            reason: reason.into(),
        }
    }
}

/// The engine's view of one side → the resolver API's.
pub fn api_version(v: &Version<'_>) -> api::Version {
    api::Version {
        data: v.data.clone(),
        is_deleted: v.is_deleted,
        updated_at: format_ts(v.updated_at),
        updated_at_us: v.updated_at.timestamp_micros(),
        node_id: v.node_id.map(|n| n.to_string()),
    }
}

/// The engine's conflict → the resolver API's input.
pub fn api_input(input: &ConflictInput<'_>, options: &Map<String, Value>) -> api::ConflictInput {
    api::ConflictInput {
        entity_type: input.entity_type.to_string(),
        entity_uuid: input.entity_uuid.to_string(),
        master: api_version(&input.master),
        incoming: api_version(&input.incoming),
        base: input.base.as_ref().map(api_version),
        schema: input.schema.cloned(),
        options: options.clone(),
    }
}

/// The resolver API's decision → the engine's.
pub fn core_decision(d: api::Decision) -> Decision {
    match d {
        api::Decision::KeepMaster => Decision::KeepMaster,
        api::Decision::TakeIncoming => Decision::TakeIncoming,
        api::Decision::Merge { data } => Decision::Merge(data),
        api::Decision::Defer { reason } => Decision::Defer { reason },
    }
}

/// Decrements the in-flight count when a call thread ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ConflictResolver for HostedResolver {
    fn name(&self) -> &str {
        &self.name
    }

    fn uses_base(&self) -> bool {
        // The built-ins that decide without a base; a plugin may use it
        // (plugins cannot take these names).
        !matches!(
            self.name.as_str(),
            "server-wins" | "client-wins" | "last-writer-wins" | "manual"
        )
    }

    async fn resolve(&self, input: &ConflictInput<'_>) -> Result<Decision, ResolveError> {
        let request = api_input(input, &self.options);
        match &self.backend {
            Backend::Linked(r) => {
                let r = r.clone();
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.resolve(&request)))
                {
                    Ok(Ok(d)) => Ok(core_decision(d)),
                    Ok(Err(e)) => Err(self.error(e.0)),
                    Err(p) => Err(self.error(format!(
                        "the built-in strategy panicked: {}",
                        api::__export::panic_message(&*p)
                    ))),
                }
            }
            Backend::Plugin {
                plugin,
                timeout,
                in_flight,
            } => {
                if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    return Err(self.error(format!(
                        "{MAX_IN_FLIGHT} calls into the plugin {} are still running (hung?); this conflict was not given to it. Fix or remove the plugin and restart the master",
                        plugin.path().display()
                    )));
                }
                let guard = InFlight(in_flight.clone());
                let (tx, rx) = tokio::sync::oneshot::channel();
                let call_plugin = plugin.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("resolver-{}", self.name))
                    .spawn(move || {
                        let _guard = guard;
                        let _ = tx.send(call_plugin.resolve(&request));
                    });
                if let Err(e) = spawned {
                    return Err(self.error(format!("could not start a thread for the call: {e}")));
                }
                match tokio::time::timeout(*timeout, rx).await {
                    Ok(Ok(Ok(d))) => Ok(core_decision(d)),
                    Ok(Ok(Err(e))) => Err(self.error(format!("plugin {}: {e}", plugin.path().display()))),
                    Ok(Err(_)) => Err(self.error("the plugin's call thread ended without an answer")),
                    Err(_) => Err(self.error(format!(
                        "the plugin {} gave no decision within {} ms ([conflicts] plugin_timeout_ms); the call was abandoned",
                        plugin.path().display(),
                        timeout.as_millis()
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_the_documented_five() {
        let names: Vec<String> = builtin_strategies()
            .iter()
            .map(|b| b.manifest().name)
            .collect();
        assert_eq!(
            names,
            [
                "server-wins",
                "client-wins",
                "last-writer-wins",
                "field-merge",
                "manual"
            ]
        );
    }

    #[test]
    fn unknown_options_and_values_are_all_reported() {
        let mut options = ResolverOptions::new();
        options.insert(
            "field-merge".into(),
            [("on_both_changed".to_string(), Value::from("newest"))]
                .into_iter()
                .collect(),
        );
        options.insert(
            "server-wins".into(),
            [("x".to_string(), Value::from(1))].into_iter().collect(),
        );
        options.insert("nope".into(), Map::new());
        let errs = match offered_strategies(&[], Duration::from_secs(1), &options) {
            Err(e) => e,
            Ok(_) => panic!("bad options were accepted"),
        };
        let text = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(errs.len(), 3, "{text}");
        assert!(
            text.contains("on_both_changed = \"newest\" is not allowed"),
            "{text}"
        );
        assert!(text.contains("'server-wins' has no option 'x'"), "{text}");
        assert!(text.contains("no strategy is called 'nope'"), "{text}");
    }
}
