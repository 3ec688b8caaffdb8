//! The benchmark data: DailyReport-shaped entities (~500 bytes of JSON,
//! three lines, referencing a brigade, a site and three employees) as the
//! example schema set defines them (`schemas/DailyReport.schema.json`).

use serde_json::{Value, json};
use uuid::Uuid;

/// The entities every report points at (they must exist on the node that
/// writes reports: references are checked).
#[derive(Debug, Clone)]
pub struct Refs {
    pub brigade: Uuid,
    pub site: Uuid,
    /// Report `i` names three consecutive ones, from `3i` (mod their
    /// number): with three, every report names the same three.
    pub employees: Vec<Uuid>,
}

impl Refs {
    /// One brigade, one site, three employees: every report references the
    /// same five entities.
    pub fn new() -> Refs {
        Refs::with_employees(3)
    }

    /// One brigade, one site and `k` employees (at least 3), so that the
    /// reports' references spread over `k + 2` targets as documents'
    /// references to a catalogue do (`hubsync-bench suite --targets`).
    pub fn with_employees(k: usize) -> Refs {
        Refs {
            brigade: Uuid::now_v7(),
            site: Uuid::now_v7(),
            employees: (0..k.max(3)).map(|_| Uuid::now_v7()).collect(),
        }
    }

    /// The employees report `i` names.
    pub fn employees_of(&self, i: usize) -> [Uuid; 3] {
        let k = self.employees.len();
        [0, 1, 2].map(|j| self.employees[(3 * i + j) % k])
    }

    /// The references of [`daily_report`] `i`: `(pointer, type, uuid)` as
    /// the store records them (one row per referenced entity).
    pub fn of_report(&self, i: usize) -> Vec<(&'static str, &'static str, Uuid)> {
        let mut v = vec![
            ("/brigade", "Brigade", self.brigade),
            ("/site", "Site", self.site),
        ];
        v.extend(
            self.employees_of(i)
                .iter()
                .map(|e| ("/lines/*/employee", "Employee", *e)),
        );
        v
    }

    /// `(type, uuid, data)` of the referenced entities, in an order that
    /// satisfies their own references (employees point at the brigade).
    pub fn entities(&self) -> Vec<(&'static str, Uuid, Value)> {
        let mut v = vec![
            (
                "Brigade",
                self.brigade,
                json!({"name": "Masons", "foreman": "Ivan Petrov", "active": true}),
            ),
            (
                "Site",
                self.site,
                json!({"name": "Depot", "address": "Depot, 1 Main St", "parent": null}),
            ),
        ];
        for (j, e) in self.employees.iter().enumerate() {
            let name = match j {
                0 => "Ivan Petrov".to_string(),
                1 => "Oleg Sidorov".to_string(),
                2 => "Anna Ivanova".to_string(),
                _ => format!("Employee {j}"),
            };
            v.push((
                "Employee",
                *e,
                json!({"full_name": name, "brigade": self.brigade, "position": "mason", "hourly_rate": 21.5}),
            ));
        }
        v
    }
}

impl Default for Refs {
    fn default() -> Self {
        Refs::new()
    }
}

/// The data of DailyReport number `i`: ~500 bytes of JSON, three lines.
pub fn daily_report(i: usize, refs: &Refs) -> Value {
    let tasks = [
        "brick wall, section B, second floor",
        "mortar and materials to the scaffold",
        "site cleaning, formwork check",
    ];
    let lines: Vec<Value> = refs
        .employees_of(i)
        .iter()
        .zip(tasks)
        .enumerate()
        .map(|(k, (e, t))| json!({"employee": e, "hours": 7.5 + k as f64 * 0.25, "task": t}))
        .collect();
    json!({
        "date": format!("2025-{:02}-{:02}", 1 + (i / 28) % 12, 1 + i % 28),
        "brigade": refs.brigade,
        "site": refs.site,
        "status": "submitted",
        "notes": format!("report {i}: no incidents"),
        "lines": lines,
    })
}

/// A small entity (a Brigade, ~70 bytes) for the many-clients scenario.
pub fn small(i: usize) -> Value {
    small_of(i, "Ivan Petrov")
}

/// A small entity with its foreman: the field the scoped many-clients run
/// routes on (each client receives its own foreman's brigades).
pub fn small_of(i: usize, foreman: &str) -> Value {
    json!({"name": format!("Brigade {i}"), "foreman": foreman, "active": true})
}

/// The foreman of simulated client `k` in the scoped many-clients run.
pub fn foreman(k: usize) -> String {
    format!("Foreman {k}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_about_500_bytes_and_valid() {
        let refs = Refs::new();
        let registry = hubsync_core::schema::EntityRegistry::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"),
        )
        .expect("example schema set loads");
        let ty = registry.get("DailyReport").expect("DailyReport type");
        for i in [0, 1, 99, 12_345, 999_999] {
            let d = daily_report(i, &refs);
            let len = d.to_string().len();
            assert!((450..600).contains(&len), "report {i} is {len} bytes");
            assert!(ty.validate(&d).is_ok(), "report {i} is valid");
            assert_eq!(d["lines"].as_array().map(Vec::len), Some(3));
        }
        for (t, _, data) in refs.entities() {
            let ty = registry.get(t).expect("reference type");
            assert!(ty.validate(&data).is_ok(), "{t} is valid");
        }
        let brigade = registry.get("Brigade").expect("Brigade type");
        assert!(brigade.validate(&small(7)).is_ok());
    }

    #[test]
    fn reports_spread_their_references_over_the_targets() {
        let three = Refs::new();
        assert_eq!(three.employees_of(0), three.employees_of(12_345));
        let many = Refs::with_employees(3_000);
        assert_eq!(many.entities().len(), 3_002);
        let named: std::collections::HashSet<Uuid> =
            (0..1_000).flat_map(|i| many.employees_of(i)).collect();
        assert_eq!(named.len(), 3_000, "1,000 reports name every employee once");
        let d = daily_report(7, &many);
        let of_report: Vec<Uuid> = many.of_report(7).iter().map(|r| r.2).collect();
        for (k, e) in many.employees_of(7).iter().enumerate() {
            assert_eq!(d["lines"][k]["employee"], json!(e));
            assert!(of_report.contains(e));
        }
    }
}
