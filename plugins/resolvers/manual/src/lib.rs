//! `manual`: every conflict is deferred to a person. The master's version
//! stands meanwhile; the incoming one is kept in the version history and
//! the audit record's outcome is `conflict_deferred`.

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, ResolveError, Resolver};

/// The name it is selected by.
pub const NAME: &str = "manual";

#[derive(Debug, Default, Clone, Copy)]
pub struct Manual;

impl Resolver for Manual {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Every conflict waits for a person; the master's version stands meanwhile.".into(),
            symmetric: true,
            options: Vec::new(),
        }
    }

    fn resolve(&self, input: &ConflictInput) -> Result<Decision, ResolveError> {
        Ok(Decision::Defer {
            reason: format!(
                "conflicts on {} are resolved by a person (strategy `manual`)",
                input.entity_type
            ),
        })
    }
}

#[cfg(feature = "export")]
hubsync_resolver_api::declare_resolver!(Manual);
