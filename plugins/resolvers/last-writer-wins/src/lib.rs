//! `last-writer-wins`: the version with the later UTC `updated_at` wins; on
//! equal timestamps the larger originating node id wins (a version with no
//! known node loses to one with a node), so every master decides the same
//! way whatever the arrival order. Property 11: the change with the most
//! recent UTC timestamp is selected.
//!
//! Two versions equal in both are ordered by their content (`is_deleted`,
//! then the JSON text of `data`), which makes the rule a total order and so
//! symmetric: swapping the sides mirrors the decision.

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, ResolveError, Resolver, Version};

/// The name it is selected by.
pub const NAME: &str = "last-writer-wins";

#[derive(Debug, Default, Clone, Copy)]
pub struct LastWriterWins;

fn order(a: &Version, b: &Version) -> std::cmp::Ordering {
    (a.updated_at_us, a.node_id.as_deref())
        .cmp(&(b.updated_at_us, b.node_id.as_deref()))
        .then_with(|| a.is_deleted.cmp(&b.is_deleted))
        .then_with(|| a.data.to_string().cmp(&b.data.to_string()))
}

impl Resolver for LastWriterWins {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "The later UTC updated_at wins; equal timestamps: the larger node id wins.".into(),
            symmetric: true,
            options: Vec::new(),
        }
    }

    fn resolve(&self, input: &ConflictInput) -> Result<Decision, ResolveError> {
        Ok(match order(&input.incoming, &input.master) {
            std::cmp::Ordering::Greater => Decision::TakeIncoming,
            _ => Decision::KeepMaster,
        })
    }
}

#[cfg(feature = "export")]
hubsync_resolver_api::declare_resolver!(LastWriterWins);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn version(us: i64, node: Option<&str>) -> Version {
        Version {
            data: json!({"a": 1}),
            is_deleted: false,
            updated_at: String::new(),
            updated_at_us: us,
            node_id: node.map(str::to_string),
        }
    }

    fn check(master: Version, incoming: Version, expected: Decision) {
        let input = ConflictInput {
            entity_type: "T".into(),
            entity_uuid: "u".into(),
            master,
            incoming,
            base: None,
            schema: None,
            options: Default::default(),
        };
        assert_eq!(LastWriterWins.resolve(&input).unwrap(), expected);
    }

    #[test]
    fn the_later_timestamp_wins_then_the_larger_node() {
        let n1 = Some("00000000-0000-0000-0000-000000000001");
        let n2 = Some("00000000-0000-0000-0000-000000000002");
        check(version(10, n1), version(11, n1), Decision::TakeIncoming);
        check(version(11, n1), version(10, n2), Decision::KeepMaster);
        check(version(10, n1), version(10, n2), Decision::TakeIncoming);
        check(version(10, n2), version(10, n1), Decision::KeepMaster);
        check(version(10, None), version(10, n1), Decision::TakeIncoming);
    }
}
