//! References written through the writer connection's raw handle
//! ([`sqlx::sqlite::SqliteConnection::lock_handle`]), with prepared
//! single-row statements run on the calling thread.
//!
//! Why: through sqlx every statement is a hand-off to the connection's
//! worker thread, so the reference rows went as multi-row statements that
//! found both keys and the pointer of every row in SQL (three index
//! searches a row, five rows a report) and whose values were bound one by
//! one into sqlx's argument buffers. Here each distinct key and pointer is
//! looked up once per call (memoized), a reference row is three integers
//! bound to one prepared INSERT, and a source whose key is new has no old
//! references to delete. Measured in docs/benchmarks.md, session 20.
//!
//! Safety: the handle is used only while the [`LockedSqliteHandle`] is held
//! (sqlx's worker thread makes no call on it meanwhile), every statement
//! is finalized before the lock is released ([`Stmt`]'s `Drop`), and text
//! is bound with `SQLITE_TRANSIENT` (SQLite copies it), so no binding
//! outlives the Rust value it came from.
//!
//! [`LockedSqliteHandle`]: sqlx::sqlite::LockedSqliteHandle

use std::collections::HashMap;
use std::ffi::{CStr, c_int};
use std::ptr::{self, NonNull};

use hubsync_core::store::{SourceReferences, StoreError, StoreResult};
use libsqlite3_sys as ffi;
use uuid::Uuid;

/// The statements, with what each does (for errors and the plan test).
pub(crate) const FIND_KEY: (&str, &CStr) = (
    "reading references' keys",
    c"SELECT id FROM entity_keys WHERE uuid = ?1 AND entity_type = ?2",
);
pub(crate) const ADD_KEY: (&str, &CStr) = (
    "interning references' keys",
    c"INSERT OR IGNORE INTO entity_keys (uuid, entity_type) VALUES (?1, ?2)",
);
pub(crate) const FIND_POINTER: (&str, &CStr) = (
    "reading references' pointers",
    c"SELECT id FROM ref_pointers WHERE pointer = ?1",
);
pub(crate) const ADD_POINTER: (&str, &CStr) = (
    "interning references' pointers",
    c"INSERT INTO ref_pointers (pointer) VALUES (?1) RETURNING id",
);
pub(crate) const DELETE_REFS: (&str, &CStr) = (
    "replacing entities' references",
    c"DELETE FROM entity_refs WHERE source_id = ?1",
);
pub(crate) const INSERT_REF: (&str, &CStr) = (
    "recording entities' references",
    c"INSERT OR IGNORE INTO entity_refs (source_id, pointer_id, target_id) VALUES (?1, ?2, ?3)",
);

/// An error SQLite reported through the raw handle.
#[derive(Debug, thiserror::Error)]
#[error("SQLite error {code}: {message}")]
pub(crate) struct RawError {
    code: c_int,
    message: String,
}

impl RawError {
    /// The connection's last error (`sqlite3_errmsg`), for a call that
    /// returned `code`.
    fn last(db: NonNull<ffi::sqlite3>, code: c_int) -> Self {
        // SAFETY: `db` is the open connection the caller holds locked;
        // `sqlite3_errmsg` returns a NUL-terminated string owned by it,
        // copied here before any other call on it.
        let message = unsafe {
            let m = ffi::sqlite3_errmsg(db.as_ptr());
            if m.is_null() {
                String::from("(no message)")
            } else {
                CStr::from_ptr(m).to_string_lossy().into_owned()
            }
        };
        RawError { code, message }
    }
}

/// A prepared statement, finalized when dropped.
struct Stmt {
    db: NonNull<ffi::sqlite3>,
    stmt: NonNull<ffi::sqlite3_stmt>,
    what: &'static str,
}

impl Stmt {
    fn prepare(db: NonNull<ffi::sqlite3>, (what, sql): (&'static str, &CStr)) -> StoreResult<Stmt> {
        let mut stmt = ptr::null_mut();
        // SAFETY: `db` is open and locked by the caller; `sql` is
        // NUL-terminated (length -1); `stmt` receives the new statement.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(db.as_ptr(), sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(StoreError::backend(what, RawError::last(db, rc)));
        }
        let stmt = NonNull::new(stmt).ok_or_else(|| {
            StoreError::corrupt(format!("SQLite prepared no statement for {what}"))
        })?;
        Ok(Stmt { db, stmt, what })
    }

    fn check(&self, rc: c_int) -> StoreResult<()> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(StoreError::backend(self.what, RawError::last(self.db, rc)))
        }
    }

    fn bind_text(&mut self, index: c_int, text: &str) -> StoreResult<()> {
        let len = c_int::try_from(text.len()).map_err(|_| {
            StoreError::corrupt(format!(
                "a {}-byte text to bind for {}",
                text.len(),
                self.what
            ))
        })?;
        // SAFETY: the statement is live; SQLITE_TRANSIENT makes SQLite copy
        // the `len` bytes at `text` before returning.
        let rc = unsafe {
            ffi::sqlite3_bind_text(
                self.stmt.as_ptr(),
                index,
                text.as_ptr().cast(),
                len,
                ffi::SQLITE_TRANSIENT(),
            )
        };
        self.check(rc)
    }

    fn bind_int(&mut self, index: c_int, value: i64) -> StoreResult<()> {
        // SAFETY: the statement is live.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.stmt.as_ptr(), index, value) };
        self.check(rc)
    }

    /// Runs the statement to its first row (`Some(column 0)`) or to its end
    /// (`None`), then resets it for the next bindings.
    fn run(&mut self) -> StoreResult<Option<i64>> {
        // SAFETY: the statement is live and all its parameters are bound.
        let rc = unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) };
        let out = match rc {
            // SAFETY: the statement has a current row with column 0.
            ffi::SQLITE_ROW => Ok(Some(unsafe {
                ffi::sqlite3_column_int64(self.stmt.as_ptr(), 0)
            })),
            ffi::SQLITE_DONE => Ok(None),
            rc => Err(StoreError::backend(self.what, RawError::last(self.db, rc))),
        };
        // SAFETY: the statement is live. Its return repeats the step's
        // error, already reported.
        unsafe { ffi::sqlite3_reset(self.stmt.as_ptr()) };
        out
    }

    /// The rowid the last run of this INSERT added, if it added a row
    /// (`None`: `OR IGNORE` skipped it).
    fn inserted(&self) -> Option<i64> {
        // SAFETY: the connection is open and locked by the caller; both
        // calls read what the statement just run left on it.
        unsafe {
            (ffi::sqlite3_changes(self.db.as_ptr()) == 1)
                .then(|| ffi::sqlite3_last_insert_rowid(self.db.as_ptr()))
        }
    }
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: the statement was prepared on `db` and is finalized once.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// The integer keys of (type, uuid) pairs and pointers, looked up (and
/// added where missing) once per call.
struct Interner<'a> {
    find_key: Stmt,
    add_key: Stmt,
    find_pointer: Stmt,
    add_pointer: Stmt,
    keys: HashMap<(&'a str, Uuid), i64>,
    pointers: HashMap<&'a str, i64>,
}

impl<'a> Interner<'a> {
    fn new(db: NonNull<ffi::sqlite3>) -> StoreResult<Self> {
        Ok(Interner {
            find_key: Stmt::prepare(db, FIND_KEY)?,
            add_key: Stmt::prepare(db, ADD_KEY)?,
            find_pointer: Stmt::prepare(db, FIND_POINTER)?,
            add_pointer: Stmt::prepare(db, ADD_POINTER)?,
            keys: HashMap::new(),
            pointers: HashMap::new(),
        })
    }

    /// The key's id, and whether it was known before this lookup (in the
    /// store, or met earlier in this call).
    fn key(&mut self, entity_type: &'a str, uuid: Uuid) -> StoreResult<(i64, bool)> {
        let wanted = (entity_type, uuid);
        if let Some(&id) = self.keys.get(&wanted) {
            return Ok((id, true));
        }
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = &*uuid.hyphenated().encode_lower(&mut buf);
        // Added first: a new key (the usual source) costs one statement.
        self.add_key.bind_text(1, text)?;
        self.add_key.bind_text(2, entity_type)?;
        self.add_key.run()?;
        let (id, existed) = match self.add_key.inserted() {
            Some(id) => (id, false),
            None => {
                self.find_key.bind_text(1, text)?;
                self.find_key.bind_text(2, entity_type)?;
                let id = self.find_key.run()?.ok_or_else(|| {
                    StoreError::corrupt("a reference key SQLite did not add is not in entity_keys")
                })?;
                (id, true)
            }
        };
        self.keys.insert(wanted, id);
        Ok((id, existed))
    }

    fn pointer(&mut self, pointer: &'a str) -> StoreResult<i64> {
        if let Some(&id) = self.pointers.get(pointer) {
            return Ok(id);
        }
        self.find_pointer.bind_text(1, pointer)?;
        let id = match self.find_pointer.run()? {
            Some(id) => id,
            None => {
                self.add_pointer.bind_text(1, pointer)?;
                self.add_pointer.run()?.ok_or_else(|| {
                    StoreError::corrupt("SQLite returned no id for a new reference pointer")
                })?
            }
        };
        self.pointers.insert(pointer, id);
        Ok(id)
    }
}

/// Replaces the references of every source in `items` (a source given
/// twice keeps its last list), on the connection `db`, which the caller
/// holds locked inside its write transaction.
pub(crate) fn write_references(
    db: NonNull<ffi::sqlite3>,
    items: &[SourceReferences],
) -> StoreResult<()> {
    let mut keys = Interner::new(db)?;
    let mut delete = Stmt::prepare(db, DELETE_REFS)?;
    let mut insert = Stmt::prepare(db, INSERT_REF)?;
    for ((source_type, source), refs) in items {
        // A key this call added has no references yet; one it met before
        // (a source given twice) reads as existing, so its rows go.
        let (source_id, existed) = keys.key(source_type, *source)?;
        if existed {
            delete.bind_int(1, source_id)?;
            delete.run()?;
        }
        for r in refs {
            let pointer_id = keys.pointer(&r.pointer)?;
            let (target_id, _) = keys.key(&r.target_type, r.target_uuid)?;
            insert.bind_int(1, source_id)?;
            insert.bind_int(2, pointer_id)?;
            insert.bind_int(3, target_id)?;
            insert.run()?;
        }
    }
    Ok(())
}
