//! Conflict resolution: the resolver trait the engine calls, and the
//! per-type selection policy.
//!
//! Conflicts are *detected* by the master engine (see `engine::master`); this
//! module only *decides*. A resolver sees the master's version, the incoming
//! one and metadata, and returns a [`Decision`]. Resolvers must be
//! deterministic and must not panic.
//!
//! The strategies themselves are not here: the host offers the built-in
//! strategy crates (`plugins/resolvers/*`) and loaded plugins through an
//! adapter to [`ConflictResolver`] (host `plugins.rs`). Only a minimal
//! [`ServerWins`] stays, for engines run without a host.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// One side of a conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct Version<'a> {
    pub data: &'a Value,
    pub is_deleted: bool,
    pub updated_at: DateTime<Utc>,
    /// The node whose write produced this version.
    pub node_id: Option<Uuid>,
}

/// Everything a resolver may look at.
#[derive(Debug, Clone)]
pub struct ConflictInput<'a> {
    pub entity_type: &'a str,
    pub entity_uuid: Uuid,
    pub master: Version<'a>,
    pub incoming: Version<'a>,
    /// The version both sides started from, when the master still has it.
    pub base: Option<Version<'a>>,
    /// The entity type's JSON Schema, for resolvers that need it.
    pub schema: Option<&'a Value>,
}

/// What a resolver decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The master's version stands; the incoming one is kept in history.
    KeepMaster,
    /// The incoming version replaces the master's, which is kept in history.
    TakeIncoming,
    /// A new version built from both; both are kept in history.
    Merge(Value),
    /// A person decides (manual queue); the master's version stands for now.
    Defer { reason: String },
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::KeepMaster => "master version kept",
            Decision::TakeIncoming => "incoming version taken",
            Decision::Merge(_) => "versions merged",
            Decision::Defer { .. } => "deferred to manual resolution",
        }
    }
}

/// A resolver failed to decide.
#[derive(Debug, thiserror::Error)]
#[error("conflict resolver '{resolver}' failed: {reason}")]
pub struct ResolveError {
    pub resolver: String,
    pub reason: String,
}

/// A conflict resolution strategy.
///
/// Async so that a host can run an untrusted resolver off the runtime with
/// a timeout. The engine awaits it inside the master's exchange
/// transaction: implementations must be fast and bounded.
#[async_trait::async_trait]
pub trait ConflictResolver: Send + Sync {
    /// The name it is selected by in schemas and configuration.
    fn name(&self) -> &str;
    async fn resolve(&self, input: &ConflictInput<'_>) -> Result<Decision, ResolveError>;
    /// Whether the resolver looks at [`ConflictInput::base`]. The master
    /// keeps past versions (the bases of later conflicts) only for entity
    /// types whose resolver does.
    fn uses_base(&self) -> bool {
        true
    }
}

/// The minimal `server-wins` behind [`ConflictPolicy::server_wins`]: the
/// master's version always stands. The strategies a host offers (the
/// built-in crates under `plugins/resolvers/` and loaded plugins) live
/// outside the core; this one exists so that an engine can run without a
/// host (tests, embedding).
#[derive(Debug, Default)]
pub struct ServerWins;

#[async_trait::async_trait]
impl ConflictResolver for ServerWins {
    fn uses_base(&self) -> bool {
        false
    }
    fn name(&self) -> &str {
        DEFAULT_STRATEGY
    }
    async fn resolve(&self, _input: &ConflictInput<'_>) -> Result<Decision, ResolveError> {
        Ok(Decision::KeepMaster)
    }
}

/// The name of the default strategy.
pub const DEFAULT_STRATEGY: &str = "server-wins";

/// A strategy name that no registered resolver answers to.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown conflict strategy '{name}' {place}; available strategies: {available}. Fix the name, or load the plugin that provides it in [[plugins]]"
)]
pub struct UnknownStrategy {
    pub name: String,
    pub place: String,
    pub available: String,
}

/// Which resolver handles which entity type: `[conflicts.per_type]` in the
/// configuration, else the schema's `x-hubsync.conflict`, else
/// `[conflicts].default`.
#[derive(Clone)]
pub struct ConflictPolicy {
    resolvers: BTreeMap<String, Arc<dyn ConflictResolver>>,
    default: Arc<dyn ConflictResolver>,
    per_type: HashMap<String, Arc<dyn ConflictResolver>>,
}

impl std::fmt::Debug for ConflictPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConflictPolicy")
            .field("default", &self.default.name())
            .field(
                "per_type",
                &self
                    .per_type
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.name()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

impl ConflictPolicy {
    /// Builds the policy and checks every name, reporting all unknown names
    /// at once.
    ///
    /// `schema_choices` are (type, strategy) pairs from the schemas;
    /// `config_per_type` overrides them.
    pub fn build(
        resolvers: Vec<Arc<dyn ConflictResolver>>,
        default: &str,
        schema_choices: &[(String, String)],
        config_per_type: &BTreeMap<String, String>,
    ) -> Result<ConflictPolicy, Vec<UnknownStrategy>> {
        let resolvers: BTreeMap<String, Arc<dyn ConflictResolver>> = resolvers
            .into_iter()
            .map(|r| (r.name().to_string(), r))
            .collect();
        let available = resolvers.keys().cloned().collect::<Vec<_>>().join(", ");
        let mut errors = Vec::new();
        let mut lookup = |name: &str, place: String| match resolvers.get(name) {
            Some(r) => Some(r.clone()),
            None => {
                errors.push(UnknownStrategy {
                    name: name.to_string(),
                    place,
                    available: available.clone(),
                });
                None
            }
        };
        let default_r = lookup(default, "in [conflicts].default".to_string());
        let mut per_type = HashMap::new();
        for (ty, name) in schema_choices {
            if config_per_type.contains_key(ty) {
                continue;
            }
            if let Some(r) = lookup(name, format!("for type {ty} (schema x-hubsync.conflict)")) {
                per_type.insert(ty.clone(), r);
            }
        }
        for (ty, name) in config_per_type {
            if let Some(r) = lookup(name, format!("for type {ty} ([conflicts.per_type])")) {
                per_type.insert(ty.clone(), r);
            }
        }
        match default_r {
            Some(default) if errors.is_empty() => Ok(ConflictPolicy {
                resolvers,
                default,
                per_type,
            }),
            _ => Err(errors),
        }
    }

    /// The server-wins default for every type.
    pub fn server_wins() -> ConflictPolicy {
        let default: Arc<dyn ConflictResolver> = Arc::new(ServerWins);
        ConflictPolicy {
            resolvers: [(default.name().to_string(), default.clone())].into(),
            default,
            per_type: HashMap::new(),
        }
    }

    pub fn resolver_for(&self, entity_type: &str) -> &Arc<dyn ConflictResolver> {
        self.per_type.get(entity_type).unwrap_or(&self.default)
    }

    /// Whether the master keeps past versions of this type's entities.
    pub fn keeps_versions(&self, entity_type: &str) -> bool {
        self.resolver_for(entity_type).uses_base()
    }

    pub fn available(&self) -> Vec<String> {
        self.resolvers.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver that answers to any name (selection is all these tests
    /// look at).
    struct Named(&'static str);

    #[async_trait::async_trait]
    impl ConflictResolver for Named {
        fn name(&self) -> &str {
            self.0
        }
        async fn resolve(&self, _input: &ConflictInput<'_>) -> Result<Decision, ResolveError> {
            Ok(Decision::KeepMaster)
        }
    }

    fn resolvers() -> Vec<Arc<dyn ConflictResolver>> {
        vec![
            Arc::new(Named("server-wins")),
            Arc::new(Named("last-writer-wins")),
        ]
    }

    #[test]
    fn unknown_names_are_all_reported_with_the_available_ones() {
        let per_type: BTreeMap<String, String> =
            [("DailyReport".to_string(), "newest".to_string())].into();
        let errs = ConflictPolicy::build(
            resolvers(),
            "servr-wins",
            &[("Site".into(), "bogus".into())],
            &per_type,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3);
        let text = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("'servr-wins' in [conflicts].default"),
            "{text}"
        );
        assert!(
            text.contains("for type DailyReport ([conflicts.per_type])"),
            "{text}"
        );
        assert!(text.contains("last-writer-wins, server-wins"), "{text}");
    }

    #[test]
    fn config_overrides_schema_which_overrides_default() {
        let per_type: BTreeMap<String, String> =
            [("A".to_string(), "server-wins".to_string())].into();
        let p = ConflictPolicy::build(
            resolvers(),
            "server-wins",
            &[
                ("A".into(), "last-writer-wins".into()),
                ("B".into(), "last-writer-wins".into()),
            ],
            &per_type,
        )
        .unwrap();
        assert_eq!(p.resolver_for("A").name(), "server-wins");
        assert_eq!(p.resolver_for("B").name(), "last-writer-wins");
        assert_eq!(p.resolver_for("C").name(), "server-wins");
    }
}
