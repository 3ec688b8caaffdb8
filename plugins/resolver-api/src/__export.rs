//! Plugin-side glue behind [`declare_resolver!`](crate::declare_resolver):
//! not part of the author API. Every function here is called from an
//! `extern "C"` function and must not unwind: panics are caught and turned
//! into a status plus message.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::abi::{
    ABI_VERSION, DescribeFn, ENTRY_V1_SIZE, OwnedBuf, ResolveFn, ResolverEntryV1, STATUS_BAD_INPUT,
    STATUS_ERROR, STATUS_NOT_INITIALISED, STATUS_OK, STATUS_PANIC, StaticStr, free_buffer,
};
use crate::{ConflictInput, Resolver};

/// The constructed resolver and its ABI table.
pub struct Instance<R> {
    resolver: R,
    manifest_json: Vec<u8>,
    // Owned here so the table's pointers stay valid for the library's life.
    _name: Box<str>,
    _version: Box<str>,
    table: ResolverEntryV1,
}

// SAFETY: the raw pointers in `table` point into `_name`/`_version`, which
// are immutable and owned by the instance; `R` is `Send + Sync`.
unsafe impl<R: Resolver> Sync for Instance<R> {}
// SAFETY: as above.
unsafe impl<R: Resolver> Send for Instance<R> {}

impl<R: Resolver> Instance<R> {
    /// Constructs the resolver and its table; `None` if the constructor or
    /// `manifest` panicked, or the manifest cannot be serialized.
    pub fn build(
        make: impl FnOnce() -> R,
        panic_unwind: bool,
        describe: DescribeFn,
        resolve: ResolveFn,
    ) -> Option<Instance<R>> {
        let built = catch_unwind(AssertUnwindSafe(|| {
            let resolver = make();
            let manifest = resolver.manifest();
            (resolver, manifest)
        }));
        let (resolver, manifest) = built.ok()?;
        let manifest_json = serde_json::to_vec(&manifest).ok()?;
        let name: Box<str> = manifest.name.into();
        let version: Box<str> = manifest.version.into();
        let table = ResolverEntryV1 {
            abi_version: ABI_VERSION,
            struct_size: ENTRY_V1_SIZE,
            panic_unwind: u32::from(panic_unwind),
            reserved: 0,
            name: StaticStr {
                ptr: name.as_ptr(),
                len: name.len(),
            },
            version: StaticStr {
                ptr: version.as_ptr(),
                len: version.len(),
            },
            describe,
            resolve,
            free: free_buffer,
        };
        Some(Instance {
            resolver,
            manifest_json,
            _name: name,
            _version: version,
            table,
        })
    }
}

/// The entry symbol's body.
pub fn entry<R: Resolver>(instance: Option<&'static Instance<R>>) -> *const ResolverEntryV1 {
    match instance {
        Some(i) => &i.table,
        None => std::ptr::null(),
    }
}

/// # Safety
/// `out` must be valid for writes.
pub unsafe fn describe<R: Resolver>(instance: Option<&Instance<R>>, out: *mut OwnedBuf) -> i32 {
    let (status, bytes) = match instance {
        Some(i) => (STATUS_OK, i.manifest_json.clone()),
        None => (STATUS_NOT_INITIALISED, Vec::new()),
    };
    // SAFETY: caller's contract.
    unsafe { write_out(out, status, bytes) }
}

/// # Safety
/// `input` must point to `input_len` readable bytes (or be null with
/// length 0) and `out` must be valid for writes.
pub unsafe fn resolve<R: Resolver>(
    instance: Option<&Instance<R>>,
    input: *const u8,
    input_len: usize,
    out: *mut OwnedBuf,
) -> i32 {
    let Some(instance) = instance else {
        // SAFETY: caller's contract.
        return unsafe { write_out(out, STATUS_NOT_INITIALISED, Vec::new()) };
    };
    let bytes: &[u8] = if input.is_null() || input_len == 0 {
        &[]
    } else {
        // SAFETY: caller's contract.
        unsafe { std::slice::from_raw_parts(input, input_len) }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let parsed: ConflictInput = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                return (
                    STATUS_BAD_INPUT,
                    format!("the plugin could not read the conflict input: {e}").into_bytes(),
                );
            }
        };
        match instance.resolver.resolve(&parsed) {
            Ok(decision) => match serde_json::to_vec(&decision) {
                Ok(json) => (STATUS_OK, json),
                Err(e) => (
                    STATUS_ERROR,
                    format!("the plugin could not serialize its decision: {e}").into_bytes(),
                ),
            },
            Err(e) => (STATUS_ERROR, e.0.into_bytes()),
        }
    }));
    let (status, bytes) = match outcome {
        Ok(r) => r,
        Err(payload) => (STATUS_PANIC, panic_message(&*payload).into_bytes()),
    };
    // SAFETY: caller's contract.
    unsafe { write_out(out, status, bytes) }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

unsafe fn write_out(out: *mut OwnedBuf, status: i32, bytes: Vec<u8>) -> i32 {
    if out.is_null() {
        return status;
    }
    // SAFETY: `out` is valid for writes (caller's contract).
    unsafe { out.write(OwnedBuf::from_vec(bytes)) };
    status
}
