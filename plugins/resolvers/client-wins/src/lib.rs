//! `client-wins`: the incoming version (the node's) always replaces the
//! master's, which is kept in the version history.

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, ResolveError, Resolver};

/// The name it is selected by.
pub const NAME: &str = "client-wins";

#[derive(Debug, Default, Clone, Copy)]
pub struct ClientWins;

impl Resolver for ClientWins {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "The incoming version always replaces the master's, which goes to the version history.".into(),
            symmetric: false,
            options: Vec::new(),
        }
    }

    fn resolve(&self, _input: &ConflictInput) -> Result<Decision, ResolveError> {
        Ok(Decision::TakeIncoming)
    }
}

#[cfg(feature = "export")]
hubsync_resolver_api::declare_resolver!(ClientWins);
