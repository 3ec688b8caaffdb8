//! The kit for hubsync resolver authors.
//!
//! - [`schema`]: proptest strategies for conflict inputs on an entity type
//!   (generated from its JSON Schema) or on generic JSON objects.
//! - [`assert_resolver_laws`]: the laws every resolver — built-in or
//!   plugin — must pass: it never panics (nor errs, unless allowed), it is
//!   deterministic, it mirrors its decision when master and incoming are
//!   swapped if its manifest says `symmetric`, resolving a version against
//!   itself changes nothing, and merged data validates against the schema.
//!   Runs against an in-process resolver ([`InProcess`]) and against a
//!   built library loaded through the real loader
//!   ([`hubsync_resolver_host::Plugin`], the same code the hubsync master
//!   uses).
//! - [`cdylib`]: builds a plugin crate's `cdylib` from a test, bounded.
//!
//! ```no_run
//! use hubsync_resolver_testkit::{InProcess, TypeSchema, assert_resolver_laws};
//! # #[derive(Default)] struct MyResolver;
//! # impl hubsync_resolver_api::Resolver for MyResolver {
//! #   fn manifest(&self) -> hubsync_resolver_api::Manifest { unimplemented!() }
//! #   fn resolve(&self, _: &hubsync_resolver_api::ConflictInput) -> Result<hubsync_resolver_api::Decision, hubsync_resolver_api::ResolveError> { unimplemented!() }
//! # }
//! let schema = TypeSchema::from_dir("schemas".as_ref(), "DailyReport").unwrap();
//! assert_resolver_laws(&InProcess(MyResolver), &schema);
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};

use hubsync_resolver_api::{ConflictInput, Decision, Manifest, Resolver};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{Map, Value};

pub mod cdylib;
pub mod schema;

pub use schema::{TypeSchema, conflict_inputs};

/// Why one call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The resolver returned an error (or the ABI call failed).
    Error(String),
    /// The resolver panicked.
    Panic(String),
}

/// Something the laws can be run against.
pub trait Subject {
    fn manifest(&self) -> Manifest;
    fn call(&self, input: &ConflictInput) -> Result<Decision, Failure>;
}

/// A resolver called in this process (panics caught).
pub struct InProcess<R>(pub R);

impl<R: Resolver> Subject for InProcess<R> {
    fn manifest(&self) -> Manifest {
        self.0.manifest()
    }

    fn call(&self, input: &ConflictInput) -> Result<Decision, Failure> {
        match catch_unwind(AssertUnwindSafe(|| self.0.resolve(input))) {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(Failure::Error(e.0)),
            Err(p) => Err(Failure::Panic(
                hubsync_resolver_api::__export::panic_message(&*p),
            )),
        }
    }
}

impl Subject for hubsync_resolver_host::Plugin {
    fn manifest(&self) -> Manifest {
        hubsync_resolver_host::Plugin::manifest(self).clone()
    }

    fn call(&self, input: &ConflictInput) -> Result<Decision, Failure> {
        match self.resolve(input) {
            Ok(d) => Ok(d),
            Err(hubsync_resolver_host::CallError::Panicked(m)) => Err(Failure::Panic(m)),
            Err(e) => Err(Failure::Error(e.to_string())),
        }
    }
}

impl<S: Subject + ?Sized> Subject for std::sync::Arc<S> {
    fn manifest(&self) -> Manifest {
        (**self).manifest()
    }

    fn call(&self, input: &ConflictInput) -> Result<Decision, Failure> {
        (**self).call(input)
    }
}

/// How the laws are run.
#[derive(Debug, Clone)]
pub struct Laws {
    /// Generated conflicts (at least 100 by the project's rules).
    pub cases: u32,
    /// Whether returning an error (which the host turns into a deferred
    /// conflict) is acceptable; panics never are.
    pub allow_errors: bool,
    /// Options passed to the resolver in every input.
    pub options: Map<String, Value>,
}

impl Default for Laws {
    fn default() -> Self {
        Laws {
            cases: 128,
            allow_errors: false,
            options: Map::new(),
        }
    }
}

/// Runs the resolver laws with the default settings; panics with the
/// smallest failing conflict and the law it broke.
pub fn assert_resolver_laws(subject: &impl Subject, schema: &TypeSchema) {
    if let Err(e) = check_resolver_laws(subject, schema, &Laws::default()) {
        panic!("{e}");
    }
}

/// Runs the resolver laws; `Err` says which law failed on which input.
pub fn check_resolver_laws(
    subject: &impl Subject,
    schema: &TypeSchema,
    laws: &Laws,
) -> Result<(), String> {
    let manifest = subject.manifest();
    hubsync_resolver_host::check_name(&manifest.name)
        .map_err(|e| format!("resolver manifest: {e}"))?;
    let mut runner = TestRunner::new(Config {
        cases: laws.cases,
        failure_persistence: None,
        ..Config::default()
    });
    let options = laws.options.clone();
    let strategy = proptest::strategy::Strategy::prop_map(conflict_inputs(schema), move |mut i| {
        i.options = options.clone();
        i
    });
    let result = runner.run(&strategy, |input| {
        check_one(subject, &manifest, schema, laws, &input).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, input)) => Err(format!(
            "resolver '{}' breaks a resolver law: {reason}\nsmallest failing conflict input:\n{}",
            manifest.name,
            serde_json::to_string_pretty(&input).unwrap_or_default()
        )),
        Err(TestError::Abort(reason)) => Err(format!(
            "resolver laws for '{}' aborted: {reason}",
            manifest.name
        )),
    }
}

/// The laws on one input.
pub fn check_one(
    subject: &impl Subject,
    manifest: &Manifest,
    schema: &TypeSchema,
    laws: &Laws,
    input: &ConflictInput,
) -> Result<(), String> {
    let call = |input: &ConflictInput, what: &str| -> Result<Option<Decision>, String> {
        match subject.call(input) {
            Ok(d) => Ok(Some(d)),
            Err(Failure::Panic(m)) => Err(format!("never panics: it panicked ({what}): {m}")),
            Err(Failure::Error(m)) if laws.allow_errors => {
                let _ = m;
                Ok(None)
            }
            Err(Failure::Error(m)) => Err(format!(
                "decides every valid conflict: it returned an error ({what}): {m}"
            )),
        }
    };
    let first = call(input, "first call")?;
    let second = call(input, "second call")?;
    if first != second {
        return Err(format!(
            "deterministic: the same input gave {first:?} then {second:?}"
        ));
    }
    if let Some(Decision::Merge { data }) = &first {
        schema.validate(data).map_err(|e| {
            format!("merged output validates against the schema: {e}; merged data: {data}")
        })?;
    }
    if manifest.symmetric && input.master != input.incoming {
        let swapped = call(&input.swapped(), "master and incoming swapped")?;
        if let (Some(d), Some(s)) = (&first, &swapped)
            && s != &d.mirrored()
        {
            return Err(format!(
                "symmetric (as its manifest declares): decided {d:?}, but with master and incoming swapped {s:?} instead of {:?}",
                d.mirrored()
            ));
        }
    }
    let mut same = input.clone();
    same.incoming = same.master.clone();
    match call(&same, "a version against itself")? {
        Some(Decision::Merge { data }) if data != same.master.data => Err(format!(
            "resolving a version against itself changes nothing: it merged {data} from {}",
            same.master.data
        )),
        _ => Ok(()),
    }
}
