//! The C ABI between a hubsync host and a resolver plugin (version 1).
//!
//! The plugin exports one symbol, [`ENTRY_SYMBOL`], a function taking no
//! arguments and returning a pointer to a static [`ResolverEntryV1`] (or
//! null if the plugin could not initialise). Everything else is reached
//! through that table. Rules (docs/plugins.md has the full policy):
//!
//! - Only pointers, lengths (`usize`) and `u32`/`i32` cross the boundary;
//!   structured data is UTF-8 JSON (the serde types of this crate).
//! - `abi_version` and `struct_size` are the first two fields of every
//!   version of the table and never move. A host refuses a plugin whose
//!   `abi_version` differs from its own, or whose `struct_size` is smaller
//!   than the table it knows. Fields are only ever appended within a
//!   version; changing or removing one bumps the version (and the symbol
//!   name: `hubsync_resolver_entry_v2`).
//! - A buffer the plugin returns ([`OwnedBuf`]) is freed by the plugin's
//!   `free`, never by the host's allocator.
//! - `describe` and `resolve` may be called concurrently from several
//!   threads; the table and the name/version strings live as long as the
//!   library (which a host never unloads).

/// The ABI version this crate speaks.
pub const ABI_VERSION: u32 = 1;

/// The entry symbol of ABI version 1.
pub const ENTRY_SYMBOL: &str = "hubsync_resolver_entry_v1";

/// `resolve`/`describe` succeeded; the buffer holds the JSON answer.
pub const STATUS_OK: i32 = 0;
/// The resolver returned an error; the buffer holds its message (UTF-8).
pub const STATUS_ERROR: i32 = 1;
/// The resolver panicked (caught inside the plugin); the buffer holds the
/// panic message.
pub const STATUS_PANIC: i32 = 2;
/// The plugin could not read the host's input (not valid JSON of the
/// expected shape); the buffer holds the reason.
pub const STATUS_BAD_INPUT: i32 = 3;
/// The plugin's resolver was never constructed (its constructor
/// panicked); the buffer may be empty.
pub const STATUS_NOT_INITIALISED: i32 = 4;

/// Borrowed UTF-8 bytes owned by the plugin for its whole life.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StaticStr {
    pub ptr: *const u8,
    pub len: usize,
}

/// Bytes allocated by the plugin and handed to the host; give them back
/// with the table's `free`.
#[repr(C)]
#[derive(Debug)]
pub struct OwnedBuf {
    pub ptr: *mut u8,
    pub len: usize,
}

impl OwnedBuf {
    pub const fn empty() -> OwnedBuf {
        OwnedBuf {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }
}

/// `describe(out)`: writes the [`Manifest`](crate::Manifest) as JSON into
/// `out`; returns a status.
pub type DescribeFn = unsafe extern "C" fn(out: *mut OwnedBuf) -> i32;

/// `resolve(input, input_len, out)`: reads a
/// [`ConflictInput`](crate::ConflictInput) as JSON, writes a
/// [`Decision`](crate::Decision) as JSON (status OK) or a message (any
/// other status) into `out`; returns a status.
pub type ResolveFn =
    unsafe extern "C" fn(input: *const u8, input_len: usize, out: *mut OwnedBuf) -> i32;

/// `free(buf)`: releases a buffer the plugin returned.
pub type FreeFn = unsafe extern "C" fn(buf: OwnedBuf);

/// The table a version 1 plugin's entry symbol returns.
#[repr(C)]
#[derive(Debug)]
pub struct ResolverEntryV1 {
    /// Always first: [`ABI_VERSION`] of the plugin.
    pub abi_version: u32,
    /// Always second: `size_of::<ResolverEntryV1>()` as the plugin knows it.
    pub struct_size: u32,
    /// 1 if the plugin was built with `panic = "unwind"` (so panics can be
    /// caught inside it), 0 for `panic = "abort"` (a panic would abort the
    /// whole host: refused).
    pub panic_unwind: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// The resolver's name (same as the manifest's).
    pub name: StaticStr,
    /// The plugin's version (same as the manifest's).
    pub version: StaticStr,
    pub describe: DescribeFn,
    pub resolve: ResolveFn,
    pub free: FreeFn,
}

/// The size the host expects, as stored in `struct_size`.
pub const ENTRY_V1_SIZE: u32 = std::mem::size_of::<ResolverEntryV1>() as u32;

/// The plugin side's `free`: every plugin links this crate, so every
/// plugin frees with its own allocator.
///
/// # Safety
/// `buf` must come from this plugin (a `Box<[u8]>` turned into raw parts)
/// and be freed once.
pub unsafe extern "C" fn free_buffer(buf: OwnedBuf) {
    if buf.ptr.is_null() {
        return;
    }
    // SAFETY: built by `OwnedBuf::from_vec` from a boxed slice of exactly
    // `len` bytes, freed once (caller's contract).
    unsafe {
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            buf.ptr, buf.len,
        )));
    }
}

impl OwnedBuf {
    /// Hands `bytes` over (to be freed by [`free_buffer`]).
    pub fn from_vec(bytes: Vec<u8>) -> OwnedBuf {
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        let ptr = Box::into_raw(boxed) as *mut u8;
        OwnedBuf { ptr, len }
    }
}
