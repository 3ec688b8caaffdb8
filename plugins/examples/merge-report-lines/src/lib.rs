//! `merge-report-lines`: an example third-party conflict resolver.
//!
//! Two people edited the same DailyReport offline, typically each adding
//! the lines of their own crew. Instead of losing one side's lines, this
//! resolver keeps the master's report and appends every incoming line whose
//! (employee, task) is not already there. Other fields keep the master's
//! values. A deletion against an edit is left to a person.
//!
//! Built as a `cdylib`, it is loaded by a hubsync master from
//! `[[plugins]] path = ".../libhubsync_example_merge_report_lines.so"`.

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, ResolveError, Resolver};
use serde_json::Value;

pub const NAME: &str = "merge-report-lines";

#[derive(Debug, Default, Clone, Copy)]
pub struct MergeReportLines;

/// A line's identity: (employee, task).
fn key(line: &Value) -> (Option<&Value>, Option<&Value>) {
    (line.get("employee"), line.get("task"))
}

impl Resolver for MergeReportLines {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "DailyReport: keep the master's report and add the incoming lines it lacks (same employee and task = same line).".into(),
            symmetric: false,
            options: Vec::new(),
        }
    }

    fn resolve(&self, input: &ConflictInput) -> Result<Decision, ResolveError> {
        let (m, i) = (&input.master, &input.incoming);
        if m.is_deleted != i.is_deleted {
            return Ok(Decision::Defer {
                reason: "merge-report-lines: one side deleted the report, the other edited it"
                    .into(),
            });
        }
        let Some(master) = m.data.as_object() else {
            return Err(ResolveError::new(format!(
                "merge-report-lines: the master's {} data is not a JSON object; use this resolver for DailyReport only",
                input.entity_type
            )));
        };
        let lines = |v: &Value| -> Vec<Value> {
            v.get("lines")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut merged_lines = lines(&m.data);
        let before = merged_lines.len();
        for line in lines(&i.data) {
            if !merged_lines.iter().any(|l| key(l) == key(&line)) {
                merged_lines.push(line);
            }
        }
        if merged_lines.len() == before {
            return Ok(Decision::KeepMaster);
        }
        let mut merged = master.clone();
        merged.insert("lines".into(), Value::Array(merged_lines));
        let merged = Value::Object(merged);
        Ok(if merged == i.data {
            Decision::TakeIncoming
        } else {
            Decision::Merge { data: merged }
        })
    }
}

hubsync_resolver_api::declare_resolver!(MergeReportLines);
