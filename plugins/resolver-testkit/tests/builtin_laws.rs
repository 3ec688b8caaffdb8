//! Every built-in strategy and the example plugin pass the resolver laws,
//! in process and through the dynamic-loading path (each built as a
//! cdylib and loaded by `hubsync-resolver-host`, the master's loader).
//! The loader's refusals of broken libraries are checked here too.

use std::path::{Path, PathBuf};

use hubsync_resolver_host::{LoadError, Plugin};
use hubsync_resolver_testkit::cdylib::hubsync_test_plugins;
use hubsync_resolver_testkit::{
    InProcess, Laws, Subject, TypeSchema, assert_resolver_laws, check_resolver_laws,
};
use serde_json::json;

fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn report() -> TypeSchema {
    TypeSchema::from_dir(&schemas(), "DailyReport").expect("the example DailyReport schema")
}

fn plugin(package: &str) -> std::sync::Arc<Plugin> {
    let libs = hubsync_test_plugins().unwrap_or_else(|e| panic!("building the test plugins: {e}"));
    let path = &libs[package];
    hubsync_resolver_host::load(path).unwrap_or_else(|e| panic!("loading {package}: {e}"))
}

/// The laws on the example schema set's types and on generic objects.
fn laws_everywhere(subject: &impl Subject) {
    assert_resolver_laws(subject, &report());
    assert_resolver_laws(
        subject,
        &TypeSchema::from_dir(&schemas(), "Brigade").expect("Brigade schema"),
    );
    assert_resolver_laws(subject, &TypeSchema::any_object());
}

#[test]
fn builtins_pass_the_laws_in_process() {
    laws_everywhere(&InProcess(hubsync_resolver_server_wins::ServerWins));
    laws_everywhere(&InProcess(hubsync_resolver_client_wins::ClientWins));
    laws_everywhere(&InProcess(
        hubsync_resolver_last_writer_wins::LastWriterWins,
    ));
    laws_everywhere(&InProcess(hubsync_resolver_field_merge::FieldMerge));
    laws_everywhere(&InProcess(hubsync_resolver_manual::Manual));
}

#[test]
fn builtins_pass_the_laws_through_the_loader() {
    for package in [
        "hubsync-resolver-server-wins",
        "hubsync-resolver-client-wins",
        "hubsync-resolver-last-writer-wins",
        "hubsync-resolver-field-merge",
        "hubsync-resolver-manual",
    ] {
        laws_everywhere(&plugin(package));
    }
}

#[test]
fn field_merge_passes_the_laws_with_every_rule() {
    let fm = plugin("hubsync-resolver-field-merge");
    for rule in ["master", "incoming", "defer"] {
        let laws = Laws {
            options: [("on_both_changed".to_string(), json!(rule))]
                .into_iter()
                .collect(),
            ..Laws::default()
        };
        check_resolver_laws(&fm, &report(), &laws).unwrap_or_else(|e| panic!("{rule}: {e}"));
    }
}

#[test]
fn the_example_plugin_passes_the_laws_through_the_loader() {
    assert_resolver_laws(&plugin("hubsync-example-merge-report-lines"), &report());
}

#[test]
fn a_resolver_that_breaks_a_law_is_caught_with_the_input() {
    struct Flaky;
    impl hubsync_resolver_api::Resolver for Flaky {
        fn manifest(&self) -> hubsync_resolver_api::Manifest {
            hubsync_resolver_api::Manifest {
                name: "flaky".into(),
                version: "0".into(),
                description: String::new(),
                symmetric: true,
                options: Vec::new(),
            }
        }
        fn resolve(
            &self,
            _: &hubsync_resolver_api::ConflictInput,
        ) -> Result<hubsync_resolver_api::Decision, hubsync_resolver_api::ResolveError> {
            Ok(hubsync_resolver_api::Decision::KeepMaster)
        }
    }
    let e = check_resolver_laws(
        &InProcess(Flaky),
        &TypeSchema::any_object(),
        &Laws::default(),
    )
    .unwrap_err();
    assert!(e.contains("symmetric"), "{e}");
    assert!(e.contains("smallest failing conflict input"), "{e}");
}

fn fixture() -> PathBuf {
    hubsync_test_plugins().expect("test plugins")["hubsync-test-bad-abi-resolver"].clone()
}

fn check_refusal(result: Result<impl std::fmt::Debug, LoadError>, kind: &str, words: &str) {
    let e = result.expect_err("the library must be refused");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(words), "{e}");
}

#[test]
fn broken_libraries_are_refused_with_what_why_and_what_to_do() {
    let lib = fixture();
    check_refusal(
        hubsync_resolver_host::load(&lib),
        "wrong_abi_version",
        "built for resolver ABI version 999, but this hubsync speaks version 1",
    );
    check_refusal(
        hubsync_resolver_host::load_with_symbol(&lib, "hubsync_test_entry_wrong_size"),
        "wrong_struct_size",
        "its ABI table is 8 bytes",
    );
    check_refusal(
        hubsync_resolver_host::load_with_symbol(&lib, "hubsync_test_entry_panic_abort"),
        "panic_abort",
        "built with panic = \"abort\"",
    );
    let libs = hubsync_test_plugins().expect("test plugins");
    let example = &libs["hubsync-example-merge-report-lines"];
    let errs = hubsync_resolver_host::load_all(
        &[example.clone(), example.clone()],
        &[("server-wins".into(), "a built-in strategy".into())],
    )
    .expect_err("the second copy takes a taken name");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .to_string()
            .contains("'merge-report-lines' is already taken by the plugin"),
        "{}",
        errs[0]
    );
}
