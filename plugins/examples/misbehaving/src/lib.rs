//! Test fixture: a resolver plugin whose behaviour is chosen by the
//! incoming version's `data.notes` (a DailyReport field):
//! `panic` panics, `hang` never returns (sleeps for an hour), `error`
//! returns an error, `invalid-merge` returns merged data that breaks the
//! schema; anything else takes the incoming version. One crate for all the
//! bad behaviours keeps the test builds small.

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, ResolveError, Resolver};

#[derive(Debug, Default)]
pub struct Misbehaving;

impl Resolver for Misbehaving {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: "misbehaving".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test fixture: panics, hangs or errs on demand.".into(),
            symmetric: false,
            options: Vec::new(),
        }
    }

    fn resolve(&self, input: &ConflictInput) -> Result<Decision, ResolveError> {
        match input.incoming.data.get("notes").and_then(|v| v.as_str()) {
            Some("panic") => panic!("misbehaving resolver: panic requested by the test"),
            Some("hang") => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Decision::KeepMaster)
            }
            Some("error") => Err(ResolveError::new(
                "misbehaving resolver: error requested by the test",
            )),
            Some("invalid-merge") => Ok(Decision::Merge {
                data: serde_json::json!({"unexpected": true}),
            }),
            _ => Ok(Decision::TakeIncoming),
        }
    }
}

hubsync_resolver_api::declare_resolver!(Misbehaving);
