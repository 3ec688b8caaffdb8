//! Test fixture: the entry symbol `hubsync_resolver_entry_v1` returns a
//! table claiming ABI version 999. Two more symbols, reached only through
//! the loader's test hook, return a table that is too small and one that
//! claims `panic = "abort"`.

use hubsync_resolver_api::abi::{
    ENTRY_V1_SIZE, OwnedBuf, ResolverEntryV1, STATUS_ERROR, StaticStr, free_buffer,
};

unsafe extern "C" fn describe(_out: *mut OwnedBuf) -> i32 {
    STATUS_ERROR
}

unsafe extern "C" fn resolve(_input: *const u8, _len: usize, _out: *mut OwnedBuf) -> i32 {
    STATUS_ERROR
}

const NAME: &str = "bad-abi";

struct Table(ResolverEntryV1);
// SAFETY: the table only points to 'static data and functions.
unsafe impl Sync for Table {}

const fn table(abi_version: u32, struct_size: u32, panic_unwind: u32) -> Table {
    Table(ResolverEntryV1 {
        abi_version,
        struct_size,
        panic_unwind,
        reserved: 0,
        name: StaticStr {
            ptr: NAME.as_ptr(),
            len: NAME.len(),
        },
        version: StaticStr {
            ptr: NAME.as_ptr(),
            len: 0,
        },
        describe,
        resolve,
        free: free_buffer,
    })
}

static WRONG_VERSION: Table = table(999, ENTRY_V1_SIZE, 1);
static WRONG_SIZE: Table = table(1, 8, 1);
static PANIC_ABORT: Table = table(1, ENTRY_V1_SIZE, 0);

#[unsafe(no_mangle)]
pub extern "C" fn hubsync_resolver_entry_v1() -> *const ResolverEntryV1 {
    &WRONG_VERSION.0
}

#[unsafe(no_mangle)]
pub extern "C" fn hubsync_test_entry_wrong_size() -> *const ResolverEntryV1 {
    &WRONG_SIZE.0
}

#[unsafe(no_mangle)]
pub extern "C" fn hubsync_test_entry_panic_abort() -> *const ResolverEntryV1 {
    &PANIC_ABORT.0
}
