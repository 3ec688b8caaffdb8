//! `server-wins`, hubsync's default conflict strategy: the master's version
//! always stands; the incoming one is kept in the version history.
//! (Property 10: for any detected conflict the server version is preserved
//! by default.)

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, ResolveError, Resolver};

/// The name it is selected by.
pub const NAME: &str = "server-wins";

#[derive(Debug, Default, Clone, Copy)]
pub struct ServerWins;

impl Resolver for ServerWins {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "The master's version always stands; the incoming one goes to the version history."
                    .into(),
            symmetric: false,
            options: Vec::new(),
        }
    }

    fn resolve(&self, _input: &ConflictInput) -> Result<Decision, ResolveError> {
        Ok(Decision::KeepMaster)
    }
}

#[cfg(feature = "export")]
hubsync_resolver_api::declare_resolver!(ServerWins);
