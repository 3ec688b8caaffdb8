//! `field-merge`: a three-way merge per top-level field of `data` against
//! the base version both sides started from.
//!
//! A field changed on one side only takes that side's value. A field
//! changed on both sides to different values falls back to the option
//! `on_both_changed`: `master` (default), `incoming`, or `defer` (a person
//! decides the whole conflict). The master keeps past versions for types
//! whose resolver uses a base and passes the one the change was based on.
//! **When the base is unknown** (a version stored before that) every field
//! whose values differ counts as changed on both sides, so the option
//! decides every differing field (with the default, field-merge then keeps
//! the master's version, like server-wins).
//!
//! A deletion on one side against an edit on the other is a whole-entity
//! question: the option decides it too. Merged data is validated by the
//! host against the type's schema; an invalid merge is deferred.

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, OptionSpec, ResolveError, Resolver};
use serde_json::{Map, Value, json};

/// The name it is selected by.
pub const NAME: &str = "field-merge";
/// The option naming the rule for fields changed on both sides.
pub const ON_BOTH_CHANGED: &str = "on_both_changed";

#[derive(Debug, Default, Clone, Copy)]
pub struct FieldMerge;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Master,
    Incoming,
    Defer,
}

fn rule(input: &ConflictInput) -> Result<Rule, ResolveError> {
    match input.option_str(ON_BOTH_CHANGED).unwrap_or("master") {
        "master" => Ok(Rule::Master),
        "incoming" => Ok(Rule::Incoming),
        "defer" => Ok(Rule::Defer),
        other => Err(ResolveError::new(format!(
            "field-merge: option {ON_BOTH_CHANGED} = {other:?} is not one of \"master\", \"incoming\", \"defer\"; fix it in [conflicts.options.field-merge]"
        ))),
    }
}

impl Resolver for FieldMerge {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Three-way merge per top-level field of data; fields changed on both sides follow on_both_changed (without a base version every differing field counts as changed on both sides).".into(),
            symmetric: false,
            options: vec![OptionSpec {
                name: ON_BOTH_CHANGED.into(),
                description: "What a field changed on both sides (or any differing field when the base is unknown) takes: the master's value, the incoming value, or defer the conflict to a person.".into(),
                default: json!("master"),
                allowed: vec![json!("master"), json!("incoming"), json!("defer")],
            }],
        }
    }

    fn resolve(&self, input: &ConflictInput) -> Result<Decision, ResolveError> {
        let rule = rule(input)?;
        let (m, i) = (&input.master, &input.incoming);
        if m.is_deleted != i.is_deleted {
            return Ok(match rule {
                Rule::Master => Decision::KeepMaster,
                Rule::Incoming => Decision::TakeIncoming,
                Rule::Defer => Decision::Defer {
                    reason: "field-merge: one side deleted the entity, the other edited it".into(),
                },
            });
        }
        let (Some(mo), Some(io)) = (m.data.as_object(), i.data.as_object()) else {
            return Err(ResolveError::new(
                "field-merge: both versions' data must be JSON objects; choose another strategy for this type",
            ));
        };
        let base = input.base.as_ref().and_then(|b| b.data.as_object());
        let mut merged = Map::new();
        let mut both_changed = Vec::new();
        let keys = mo.keys().chain(io.keys().filter(|k| !mo.contains_key(*k)));
        for key in keys {
            let (mv, iv) = (mo.get(key), io.get(key));
            let chosen = if mv == iv {
                mv
            } else {
                let bv = base.map(|b| b.get(key));
                match bv {
                    Some(bv) if bv == mv => iv,
                    Some(bv) if bv == iv => mv,
                    _ => {
                        both_changed.push(key.clone());
                        match rule {
                            Rule::Incoming => iv,
                            Rule::Master | Rule::Defer => mv,
                        }
                    }
                }
            };
            if let Some(v) = chosen {
                merged.insert(key.clone(), v.clone());
            }
        }
        if rule == Rule::Defer && !both_changed.is_empty() {
            return Ok(Decision::Defer {
                reason: format!(
                    "field-merge: fields changed on both sides: {}",
                    both_changed.join(", ")
                ),
            });
        }
        let merged = Value::Object(merged);
        Ok(if merged == m.data {
            Decision::KeepMaster
        } else if merged == i.data {
            Decision::TakeIncoming
        } else {
            Decision::Merge { data: merged }
        })
    }
}

#[cfg(feature = "export")]
hubsync_resolver_api::declare_resolver!(FieldMerge);

#[cfg(test)]
mod tests {
    use super::*;
    use hubsync_resolver_api::Version;

    fn v(data: Value) -> Version {
        Version {
            data,
            is_deleted: false,
            updated_at: String::new(),
            updated_at_us: 0,
            node_id: None,
        }
    }

    fn check(base: Option<Value>, master: Value, incoming: Value, rule: &str, expected: Decision) {
        let input = ConflictInput {
            entity_type: "T".into(),
            entity_uuid: "u".into(),
            master: v(master),
            incoming: v(incoming),
            base: base.map(v),
            schema: None,
            options: [(ON_BOTH_CHANGED.to_string(), json!(rule))]
                .into_iter()
                .collect(),
        };
        assert_eq!(FieldMerge.resolve(&input).unwrap(), expected);
    }

    #[test]
    fn fields_changed_on_one_side_take_that_side() {
        check(
            Some(json!({"a": 1, "b": 1})),
            json!({"a": 2, "b": 1}),
            json!({"a": 1, "b": 3}),
            "master",
            Decision::Merge {
                data: json!({"a": 2, "b": 3}),
            },
        );
    }

    #[test]
    fn fields_changed_on_both_sides_follow_the_rule() {
        let base = Some(json!({"a": 1, "b": 1}));
        let (m, i) = (json!({"a": 2, "b": 2}), json!({"a": 3, "b": 1}));
        check(
            base.clone(),
            m.clone(),
            i.clone(),
            "master",
            Decision::KeepMaster,
        );
        check(
            base.clone(),
            m.clone(),
            i.clone(),
            "incoming",
            Decision::Merge {
                data: json!({"a": 3, "b": 2}),
            },
        );
        assert!(matches!(
            FieldMerge.resolve(&ConflictInput {
                entity_type: "T".into(),
                entity_uuid: "u".into(),
                master: v(m),
                incoming: v(i),
                base: base.map(v),
                schema: None,
                options: [(ON_BOTH_CHANGED.to_string(), json!("defer"))]
                    .into_iter()
                    .collect(),
            }),
            Ok(Decision::Defer { .. })
        ));
    }

    #[test]
    fn without_a_base_every_differing_field_follows_the_rule() {
        let (m, i) = (json!({"a": 1, "b": 1}), json!({"a": 1, "b": 2, "c": 3}));
        check(None, m.clone(), i.clone(), "master", Decision::KeepMaster);
        check(None, m, i, "incoming", Decision::TakeIncoming);
    }

    #[test]
    fn an_unknown_rule_is_an_error_naming_the_option() {
        let input = ConflictInput {
            entity_type: "T".into(),
            entity_uuid: "u".into(),
            master: v(json!({})),
            incoming: v(json!({})),
            base: None,
            schema: None,
            options: [(ON_BOTH_CHANGED.to_string(), json!("newest"))]
                .into_iter()
                .collect(),
        };
        let e = FieldMerge.resolve(&input).unwrap_err();
        assert!(e.0.contains("on_both_changed"), "{e}");
    }
}
