//! Routing: which rows each node receives (issue 5, docs/operations.md
//! "Routing").
//!
//! A node without a scope receives everything. A scoped node receives the
//! entity types its scope lists, optionally only rows whose fields hold one
//! of the listed values (for example the DailyReports of its brigades), and
//! — unless `with_references` is false — every entity those rows refer to,
//! transitively, so that every reference it holds resolves.
//!
//! The master's change log stays one row per entity whatever the number of
//! nodes (a write costs the same with 10 or 10,000 nodes); the scope is
//! applied when a node's packet is built. For scoped nodes the master
//! records what it sent (`node_holdings`), so that a row leaving the scope
//! is evicted from exactly the nodes that have it. Holdings are an
//! over-approximation that is safe to rebuild a lost packet from: a row is
//! "held before packet p" if it was first sent before p and not evicted
//! before p; an eviction the node did not need is a no-op on the client.
//!
//! A scope change takes effect with the next new packet (never inside a
//! packet that is being resent): the node's log position restarts from the
//! beginning, so that it receives what it newly covers and is told to drop
//! what it no longer covers.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;
use uuid::Uuid;

use super::{Engine, EngineError};
use crate::entity::Entity;
use crate::schema::EntityRegistry;
use crate::store::{Holding, Revision, ScopeFilter, ScopeRecord, StoreTx};

/// Which rows of one entity type a scope covers.
#[derive(Debug, Clone, PartialEq)]
pub enum TypeRule {
    /// Every row.
    All,
    /// Rows where every listed field (`uuid`: the entity's own id) holds
    /// one of its listed values.
    Where(BTreeMap<String, Vec<Value>>),
}

/// A node's routing scope, parsed and checked against the schema set.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub types: BTreeMap<String, TypeRule>,
    /// Also send every entity a sent row refers to (default true).
    pub with_references: bool,
}

impl Scope {
    /// Parses the JSON form
    /// `{"types": {"Site": "all", "DailyReport": {"brigade": ["<uuid>", …]}},
    ///   "with_references": true}` and checks every type and field against
    /// the registry. Errors list every problem.
    pub fn parse(value: &Value, registry: &EntityRegistry) -> Result<Scope, EngineError> {
        let mut problems = Vec::new();
        let Some(obj) = value.as_object() else {
            return Err(EngineError::InvalidScope(
                "a scope is a JSON object like {\"types\": {\"Site\": \"all\", \"DailyReport\": {\"brigade\": [\"<uuid>\"]}}}".into(),
            ));
        };
        for key in obj.keys() {
            if key != "types" && key != "with_references" {
                problems.push(format!(
                    "unknown key '{key}' (a scope has 'types' and 'with_references')"
                ));
            }
        }
        let with_references = match obj.get("with_references") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                problems.push(format!(
                    "'with_references' must be true or false, not {other}"
                ));
                true
            }
        };
        let mut types = BTreeMap::new();
        match obj.get("types") {
            Some(Value::Object(map)) => {
                for (name, rule) in map {
                    let Some(ty) = registry.get(name) else {
                        problems.push(format!(
                            "unknown entity type '{name}'; the schema set defines: {}",
                            registry.type_names().join(", ")
                        ));
                        continue;
                    };
                    let properties = ty.schema.get("properties").and_then(Value::as_object);
                    match rule {
                        Value::String(s) if s == "all" => {
                            types.insert(name.clone(), TypeRule::All);
                        }
                        Value::Object(fields) if !fields.is_empty() => {
                            let mut filters = BTreeMap::new();
                            for (field, values) in fields {
                                if field != "uuid"
                                    && properties.is_some_and(|p| !p.contains_key(field))
                                {
                                    problems.push(format!(
                                        "{name} has no property '{field}' to filter on"
                                    ));
                                    continue;
                                }
                                match values {
                                    Value::Array(list) => {
                                        filters.insert(field.clone(), list.clone());
                                    }
                                    other => problems.push(format!(
                                        "{name}.{field}: the values to match must be a JSON array, not {other}"
                                    )),
                                }
                            }
                            types.insert(name.clone(), TypeRule::Where(filters));
                        }
                        other => problems.push(format!(
                            "{name}: the rule must be \"all\" or an object of field → [values], not {other}"
                        )),
                    }
                }
            }
            Some(other) => problems.push(format!(
                "'types' must be an object of entity type → rule, not {other}"
            )),
            None => {
                problems.push("a scope needs 'types' (the entity types the node receives)".into())
            }
        }
        if problems.is_empty() {
            Ok(Scope {
                types,
                with_references,
            })
        } else {
            Err(EngineError::InvalidScope(problems.join("; ")))
        }
    }

    /// Whether the scope's rules cover the row (references aside).
    pub fn matches(&self, entity: &Entity) -> bool {
        match self.types.get(&entity.entity_type) {
            None => false,
            Some(TypeRule::All) => true,
            Some(TypeRule::Where(filters)) => filters.iter().all(|(field, values)| {
                if field == "uuid" {
                    let own = entity.uuid.to_string();
                    values.iter().any(|v| v.as_str() == Some(own.as_str()))
                } else {
                    entity
                        .data
                        .get(field)
                        .is_some_and(|actual| values.contains(actual))
                }
            }),
        }
    }

    /// The scope as a store can test it in a query: a superset of
    /// [`Scope::matches`]. A field whose values are not all strings is left
    /// out of its type's rule (which widens it); a type whose fields are
    /// all left out covers every row.
    pub fn filter(&self) -> ScopeFilter {
        let types = self
            .types
            .iter()
            .map(|(ty, rule)| {
                let fields = match rule {
                    TypeRule::All => None,
                    TypeRule::Where(filters) => {
                        let fields: Vec<(String, Vec<String>)> = filters
                            .iter()
                            .filter_map(|(field, values)| {
                                let strings: Option<Vec<String>> = values
                                    .iter()
                                    .map(|v| v.as_str().map(str::to_owned))
                                    .collect();
                                strings.map(|s| (field.clone(), s))
                            })
                            .collect();
                        (!fields.is_empty()).then_some(fields)
                    }
                };
                (ty.clone(), fields)
            })
            .collect();
        ScopeFilter {
            types,
            with_references: self.with_references,
        }
    }
}

/// What a packet being built for a scoped node tells it about one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Send the row.
    Send,
    /// Tell the node to drop its copy.
    Evict,
    /// Nothing: the node neither has nor needs it.
    Skip,
}

/// The routing of one packet being built for a scoped node.
pub(super) struct PacketRouting {
    pub node: Uuid,
    pub packet_no: i64,
    pub scope: Scope,
    /// Rows already in this packet (by uuid), sent or evicted.
    pub seen: HashSet<Uuid>,
    /// What the node holds of the entities read or written while building
    /// this packet (`None`: nothing recorded). Every holding read and write
    /// of the packet goes through it, so it stays exact.
    holdings: HashMap<(String, Uuid), Option<Holding>>,
    /// Whether a live holding refers to the entity, for the entities asked
    /// about while building this packet. An entry is dropped when a row
    /// that refers to that entity starts or stops being held.
    referenced: HashMap<(String, Uuid), bool>,
}

impl PacketRouting {
    /// Whether the node has the row as far as packet `packet_no` knows:
    /// first sent before it and not evicted before it.
    fn held_before(&self, h: Option<Holding>) -> bool {
        h.is_some_and(|h| {
            h.since_packet < self.packet_no && h.evicted_in.is_none_or(|e| e >= self.packet_no)
        })
    }

    /// Whether the node may have the row (an over-approximation).
    fn may_hold(&self, h: Option<Holding>) -> bool {
        h.is_some_and(|h| h.evicted_in.is_none_or(|e| e >= self.packet_no))
    }
}

impl Engine {
    /// The routing of the packet `packet_no` being built for `node`, or
    /// None for an unscoped node. A pending scope change takes effect here
    /// when `new_packet`; the second value is then true and the caller
    /// restarts the node's log position at 0; the third is the revision up
    /// to which the node's own versions are sent back to it (it may have
    /// dropped them while scoped). `received_anything`: the node
    /// has been sent packets before (coming from "everything", it may hold
    /// any row, so every current row is recorded as possibly held and the
    /// rescan evicts those out of scope). `record`: the node's scope record,
    /// as the caller read it in `tx`.
    pub(super) async fn packet_routing(
        &self,
        tx: &mut dyn StoreTx,
        node: Uuid,
        mut record: ScopeRecord,
        packet_no: i64,
        new_packet: bool,
        received_anything: bool,
    ) -> Result<(Option<PacketRouting>, bool, i64), EngineError> {
        let mut restart = false;
        if new_packet && let Some(next) = record.pending.take() {
            let was_scoped = record.scope.is_some();
            record.scope = next;
            record.resend_own_to = tx.log_head().await?;
            restart = true;
            if record.scope.is_none() {
                tx.clear_holdings(node).await?;
            } else if !was_scoped && received_anything {
                tx.seed_holdings(node).await?;
            }
            tx.put_scope(node, &record).await?;
        }
        let Some(stored) = record.scope else {
            return Ok((None, restart, record.resend_own_to));
        };
        let scope = Scope::parse(&stored, &self.registry)?;
        Ok((
            Some(PacketRouting {
                node,
                packet_no,
                scope,
                seen: HashSet::new(),
                holdings: HashMap::new(),
                referenced: HashMap::new(),
            }),
            restart,
            record.resend_own_to,
        ))
    }

    /// Reads at once what the packet's routing asks of each of `rows`: what
    /// the node holds of it and, for those the scope does not match (with
    /// references), whether a live holding refers to it. Two queries instead
    /// of two per row; the answers then come from `routing`.
    pub(super) async fn prefetch_routing(
        &self,
        tx: &mut dyn StoreTx,
        routing: &mut PacketRouting,
        rows: &[(Revision, Entity)],
    ) -> Result<(), EngineError> {
        let key = |e: &Entity| (e.entity_type.clone(), e.uuid);
        let untargeted = || rows.iter().filter(|(rev, _)| rev.target.is_none());
        let keys: Vec<(String, Uuid)> = untargeted().map(|(_, e)| key(e)).collect();
        let found = tx.holdings(routing.node, &keys).await?;
        routing.holdings.extend(keys.into_iter().map(|k| (k, None)));
        routing
            .holdings
            .extend(found.into_iter().map(|(k, h)| (k, Some(h))));
        if routing.scope.with_references {
            let unmatched: Vec<(String, Uuid)> = untargeted()
                .filter(|(_, e)| !routing.scope.matches(e))
                .map(|(_, e)| key(e))
                .collect();
            let referenced = tx.referenced_by_holdings(routing.node, &unmatched).await?;
            routing
                .referenced
                .extend(unmatched.into_iter().map(|k| (k, false)));
            routing
                .referenced
                .extend(referenced.into_iter().map(|k| (k, true)));
        }
        Ok(())
    }

    /// What the node holds of an entity, as recorded so far in this packet.
    async fn holding_of(
        &self,
        tx: &mut dyn StoreTx,
        routing: &mut PacketRouting,
        entity_type: &str,
        uuid: Uuid,
    ) -> Result<Option<Holding>, EngineError> {
        let key = (entity_type.to_string(), uuid);
        if let Some(h) = routing.holdings.get(&key) {
            return Ok(*h);
        }
        let h = tx.holding(routing.node, entity_type, uuid).await?;
        routing.holdings.insert(key, h);
        Ok(h)
    }

    /// Whether a live entity the node holds refers to the entity.
    async fn is_referenced(
        &self,
        tx: &mut dyn StoreTx,
        routing: &mut PacketRouting,
        entity_type: &str,
        uuid: Uuid,
    ) -> Result<bool, EngineError> {
        let key = (entity_type.to_string(), uuid);
        if let Some(r) = routing.referenced.get(&key) {
            return Ok(*r);
        }
        let r = tx
            .referenced_by_holding(routing.node, entity_type, uuid)
            .await?;
        routing.referenced.insert(key, r);
        Ok(r)
    }

    /// Records what the node was sent of `entity`. When the row starts or
    /// stops being held, what it refers to may have gained or lost its last
    /// live referrer: those answers are asked again.
    async fn set_holding(
        &self,
        tx: &mut dyn StoreTx,
        routing: &mut PacketRouting,
        entity: &Entity,
        holding: Holding,
    ) -> Result<(), EngineError> {
        tx.put_holding(routing.node, &entity.entity_type, entity.uuid, holding)
            .await?;
        let live = |h: &Holding| h.evicted_in.is_none();
        let key = (entity.entity_type.clone(), entity.uuid);
        let was_live = routing
            .holdings
            .get(&key)
            .map(|h| h.is_some_and(|h| live(&h)));
        if was_live != Some(live(&holding)) {
            match self.registry.get(&entity.entity_type) {
                Some(ty) => {
                    for r in &ty.references {
                        for target in r.values(&entity.data) {
                            routing.referenced.remove(&(r.target.clone(), target));
                        }
                    }
                }
                None => routing.referenced.clear(),
            }
        }
        routing.holdings.insert(key, Some(holding));
        Ok(())
    }

    /// Decides what the packet tells the node about `entity` and records it.
    pub(super) async fn route(
        &self,
        tx: &mut dyn StoreTx,
        routing: &mut PacketRouting,
        entity: &Entity,
    ) -> Result<Route, EngineError> {
        let holding = self
            .holding_of(tx, routing, &entity.entity_type, entity.uuid)
            .await?;
        let keep = routing.scope.matches(entity)
            || (routing.scope.with_references
                && self
                    .is_referenced(tx, routing, &entity.entity_type, entity.uuid)
                    .await?);
        if keep {
            if !routing.held_before(holding) || holding.is_some_and(|h| h.evicted_in.is_some()) {
                let since = match holding {
                    Some(h) if h.evicted_in.is_none() => h.since_packet,
                    _ => routing.packet_no,
                };
                self.set_holding(
                    tx,
                    routing,
                    entity,
                    Holding {
                        since_packet: since,
                        evicted_in: None,
                    },
                )
                .await?;
            }
            Ok(Route::Send)
        } else if routing.may_hold(holding) {
            if let Some(h) = holding
                && h.evicted_in.is_none()
            {
                self.set_holding(
                    tx,
                    routing,
                    entity,
                    Holding {
                        since_packet: h.since_packet,
                        evicted_in: Some(routing.packet_no),
                    },
                )
                .await?;
            }
            Ok(Route::Evict)
        } else {
            Ok(Route::Skip)
        }
    }

    /// The entities `sent` refers to, transitively, that the node does not
    /// hold yet (and this packet does not carry): they travel with it so
    /// that every reference on the node resolves. Recorded as held.
    pub(super) async fn referenced_closure(
        &self,
        tx: &mut dyn StoreTx,
        routing: &mut PacketRouting,
        sent: &Entity,
    ) -> Result<Vec<Entity>, EngineError> {
        let mut out = Vec::new();
        if !routing.scope.with_references {
            return Ok(out);
        }
        let mut work = vec![sent.clone()];
        while let Some(e) = work.pop() {
            let Some(ty) = self.registry.get(&e.entity_type) else {
                continue;
            };
            for r in &ty.references {
                for target in r.values(&e.data) {
                    if !routing.seen.insert(target) {
                        continue;
                    }
                    let holding = self.holding_of(tx, routing, &r.target, target).await?;
                    if routing.held_before(holding) {
                        continue;
                    }
                    let Some(found) = tx.get_entity(&r.target, target).await? else {
                        continue;
                    };
                    self.set_holding(
                        tx,
                        routing,
                        &found,
                        Holding {
                            since_packet: routing.packet_no,
                            evicted_in: None,
                        },
                    )
                    .await?;
                    work.push(found.clone());
                    out.push(found);
                }
            }
            if out.len() > 100_000 {
                break;
            }
        }
        Ok(out)
    }

    /// After `evicted` left the node: what it referred to that the node
    /// holds only because of such references (not matched by the scope, no
    /// longer referred to by anything the node holds) leaves too,
    /// transitively. Returned in eviction order, recorded as evicted.
    pub(super) async fn eviction_closure(
        &self,
        tx: &mut dyn StoreTx,
        routing: &mut PacketRouting,
        evicted: &Entity,
    ) -> Result<Vec<Entity>, EngineError> {
        let mut out = Vec::new();
        let mut work = vec![evicted.clone()];
        while let Some(e) = work.pop() {
            let Some(ty) = self.registry.get(&e.entity_type) else {
                continue;
            };
            let targets: Vec<(String, Uuid)> = ty
                .references
                .iter()
                .flat_map(|r| r.values(&e.data).into_iter().map(|t| (r.target.clone(), t)))
                .collect();
            for (target_type, target) in targets {
                // Even a row this packet already carries is evaluated again:
                // the client applies evictions after the rows.
                let holding = self.holding_of(tx, routing, &target_type, target).await?;
                let Some(h) = holding.filter(|h| h.evicted_in.is_none()) else {
                    continue;
                };
                let Some(found) = tx.get_entity(&target_type, target).await? else {
                    continue;
                };
                if routing.scope.matches(&found)
                    || self
                        .is_referenced(tx, routing, &target_type, target)
                        .await?
                {
                    continue;
                }
                routing.seen.insert(target);
                self.set_holding(
                    tx,
                    routing,
                    &found,
                    Holding {
                        since_packet: h.since_packet,
                        evicted_in: Some(routing.packet_no),
                    },
                )
                .await?;
                work.push(found.clone());
                out.push(found);
            }
            if out.len() > 100_000 {
                break;
            }
        }
        Ok(out)
    }

    /// Sets the scope `code` receives (`None`: everything) from its next
    /// new packet on; checked against the schema set first.
    pub async fn set_node_scope(
        &self,
        code: &str,
        scope: Option<Value>,
    ) -> Result<ScopeRecord, EngineError> {
        self.require(crate::store::NodeRole::Master)?;
        if let Some(s) = &scope {
            Scope::parse(s, &self.registry)?;
        }
        let node = self
            .store
            .get_node_by_code(code)
            .await?
            .filter(|n| !n.is_self)
            .ok_or_else(|| EngineError::UnknownNode(code.to_string()))?;
        let mut tx = self.store.begin().await?;
        let mut record = tx.get_scope(node.id).await?;
        if record.scope == scope && record.pending.is_none() {
            return Ok(record);
        }
        record.pending = Some(scope);
        tx.put_scope(node.id, &record).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The scope `code` receives and any change waiting to take effect.
    pub async fn node_scope(&self, code: &str) -> Result<ScopeRecord, EngineError> {
        self.require(crate::store::NodeRole::Master)?;
        let node = self
            .store
            .get_node_by_code(code)
            .await?
            .filter(|n| !n.is_self)
            .ok_or_else(|| EngineError::UnknownNode(code.to_string()))?;
        let mut tx = self.store.begin().await?;
        let record = tx.get_scope(node.id).await?;
        drop(tx);
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(ty: &str, data: Value) -> Entity {
        Entity {
            entity_type: ty.into(),
            uuid: Uuid::now_v7(),
            updated_at: crate::entity::now_utc(),
            is_deleted: false,
            data,
            rev: None,
            origin: None,
        }
    }

    #[test]
    fn rules_match_fields_and_own_uuid() {
        let b = Uuid::now_v7().to_string();
        let scope = Scope {
            types: BTreeMap::from([
                ("Site".to_string(), TypeRule::All),
                (
                    "DailyReport".to_string(),
                    TypeRule::Where(BTreeMap::from([("brigade".to_string(), vec![json!(b)])])),
                ),
            ]),
            with_references: true,
        };
        assert!(scope.matches(&entity("Site", json!({}))));
        assert!(scope.matches(&entity("DailyReport", json!({"brigade": b}))));
        assert!(!scope.matches(&entity("DailyReport", json!({"brigade": "other"}))));
        assert!(!scope.matches(&entity("DailyReport", json!({}))));
        assert!(!scope.matches(&entity("Employee", json!({"brigade": b}))));
        let mine = entity("Brigade", json!({}));
        let by_id = Scope {
            types: BTreeMap::from([(
                "Brigade".to_string(),
                TypeRule::Where(BTreeMap::from([(
                    "uuid".to_string(),
                    vec![json!(mine.uuid.to_string())],
                )])),
            )]),
            with_references: false,
        };
        assert!(by_id.matches(&mine));
        assert!(!by_id.matches(&entity("Brigade", json!({}))));
    }
}
