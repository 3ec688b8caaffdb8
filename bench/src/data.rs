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
    pub employees: [Uuid; 3],
}

impl Refs {
    pub fn new() -> Refs {
        Refs {
            brigade: Uuid::now_v7(),
            site: Uuid::now_v7(),
            employees: [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()],
        }
    }

    /// The references of every [`daily_report`]: `(pointer, type, uuid)`
    /// as the store records them (one row per referenced entity).
    pub fn of_report(&self) -> Vec<(&'static str, &'static str, Uuid)> {
        let mut v = vec![
            ("/brigade", "Brigade", self.brigade),
            ("/site", "Site", self.site),
        ];
        v.extend(
            self.employees
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
        for (e, name) in self
            .employees
            .iter()
            .zip(["Ivan Petrov", "Oleg Sidorov", "Anna Ivanova"])
        {
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
        .employees
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
}
