//! The example plugin's own tests, as a plugin author would write them:
//! what it decides on a known conflict, and the resolver laws in process
//! and through the real loader.

use std::path::{Path, PathBuf};

use hubsync_example_merge_report_lines::MergeReportLines;
use hubsync_resolver_api::{ConflictInput, Decision, Resolver, Version};
use hubsync_resolver_testkit::cdylib::build_cdylib;
use hubsync_resolver_testkit::{InProcess, TypeSchema, assert_resolver_laws};
use serde_json::{Value, json};

fn schema() -> TypeSchema {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../schemas");
    TypeSchema::from_dir(&dir, "DailyReport").expect("the example schema set")
}

fn version(lines: Value) -> Version {
    Version {
        data: json!({"date": "2025-12-12", "brigade": "0190a000-0000-7000-8000-000000000001",
                     "site": "0190a000-0000-7000-8000-000000000002", "lines": lines}),
        is_deleted: false,
        updated_at: "2025-12-12T10:00:00.000000Z".into(),
        updated_at_us: 0,
        node_id: None,
    }
}

fn line(employee: u8, task: &str) -> Value {
    json!({"employee": format!("0190a000-0000-7000-8000-00000000000{employee}"), "hours": 4, "task": task})
}

fn check(master: Value, incoming: Value, expected: Decision) {
    let input = ConflictInput {
        entity_type: "DailyReport".into(),
        entity_uuid: "0190a000-0000-7000-8000-0000000000ff".into(),
        master: version(master),
        incoming: version(incoming),
        base: None,
        schema: None,
        options: Default::default(),
    };
    assert_eq!(MergeReportLines.resolve(&input).unwrap(), expected);
}

#[test]
fn lines_from_both_sides_are_kept_once() {
    let mut merged = version(json!([line(1, "walls"), line(2, "roof")])).data;
    merged["lines"] = json!([line(1, "walls"), line(2, "roof"), line(3, "floor")]);
    check(
        json!([line(1, "walls"), line(2, "roof")]),
        json!([line(1, "walls"), line(3, "floor")]),
        Decision::Merge { data: merged },
    );
    check(
        json!([line(1, "walls")]),
        json!([line(1, "walls")]),
        Decision::KeepMaster,
    );
}

#[test]
fn passes_the_resolver_laws_in_process() {
    assert_resolver_laws(&InProcess(MergeReportLines), &schema());
}

#[test]
fn passes_the_resolver_laws_through_the_loader() {
    let path = build_cdylib("hubsync-example-merge-report-lines", &[])
        .unwrap_or_else(|e| panic!("building the plugin: {e}"));
    let plugin = hubsync_resolver_host::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.name(), "merge-report-lines");
    assert_resolver_laws(&plugin, &schema());
}
