#!/usr/bin/env python3
"""What the reference index costs SQLite, by schema (docs/benchmarks.md,
Session 7). Not part of the suite: a design experiment with Python's
sqlite3 module and the store's pragmas (WAL, synchronous = FULL), writing
DailyReport-sized rows (~550 bytes of JSON) with five references each,
500 per transaction, uuids in time order as hubsync's v7 ones are.

    python3 bench/experiments/refs_schema.py [N]

Variants:
  entities      the entity rows alone (the suite's plain-table baseline)
  queue         + one queue row each (sync_changes and its four indexes)
  refs-text     + five reference rows each, as the store keeps them today
                (TEXT uuids, WITHOUT ROWID primary key, entity_refs_target)
  refs-integer  + five reference rows each keyed by integers: entities get
                an INTEGER PRIMARY KEY, entity_refs (source_id, pointer,
                target_id) with an index on target_id
  refs-interned + five reference rows each keyed by integers that come from
                an interning table (entity_keys: id, type, uuid, unique on
                uuid and type) instead of the entities table: one key row
                per report (its own uuid), the targets' keys looked up (and
                inserted when new) once per transaction, then rows
                (source_id, pointer_id, target_id); entities unchanged. What
                a migration could do without touching `entities`, and
                without needing a referenced entity to exist
  refs-joined   the same tables as refs-interned, written as a pipelined
                store would, without reading ids back: one INSERT OR IGNORE
                of every key of the transaction, then per 100 reports a
                DELETE of their old references and one INSERT … SELECT
                joining the new rows' (type, uuid) pairs to entity_keys
  refs-target   + five reference rows each in one tree keyed target first
                (what the index entity_refs_target held), and one row per
                source with its references packed as JSON (what a
                replacement deletes); the store's layout from migration 7
  refs-listed   one tree keyed target first, (target_id, source_id, pointer),
                and each source's references kept as a JSON list on its
                `entity_keys` row, through which a replacement finds the
                old rows (session 19: no faster than refs-joined, which
                writes a second tree but no list)
  refs-listed-j the same, the rows inserted from the stored list with
                json_each instead of a VALUES list

Python's own per-row cost is in every figure, so compare the variants with
each other, not with the suite's Rust baselines.
"""
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid

N = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
DATA = json.dumps({
    "date": "2026-01-01", "brigade": str(uuid.uuid4()), "site": str(uuid.uuid4()),
    "status": "submitted", "notes": "report 1: no incidents " + "z" * 100,
    "lines": [{"employee": str(uuid.uuid4()), "hours": 7.5, "task": "brick wall, section B, second floor"}
              for _ in range(3)],
})
_counter = itertools.count(1 << 40)


def ordered_uuid():
    """A uuid whose first 48 bits grow, like a v7 uuid's timestamp."""
    n = next(_counter)
    return str(uuid.UUID(f"{n:012x}" + uuid.uuid4().hex[12:]))


ENTITIES = """CREATE TABLE entities (entity_type TEXT NOT NULL, uuid TEXT NOT NULL,
    updated_at TEXT NOT NULL, is_deleted INTEGER NOT NULL, data TEXT NOT NULL, rev INTEGER,
    origin_node_id TEXT, PRIMARY KEY (entity_type, uuid));"""
ENTITIES_INT = """CREATE TABLE entities (id INTEGER PRIMARY KEY, entity_type TEXT NOT NULL,
    uuid TEXT NOT NULL, updated_at TEXT NOT NULL, is_deleted INTEGER NOT NULL, data TEXT NOT NULL,
    rev INTEGER, origin_node_id TEXT, UNIQUE (entity_type, uuid));"""
QUEUE = """CREATE TABLE sync_changes (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
    node_id TEXT, entity_type TEXT NOT NULL, entity_uuid TEXT NOT NULL, operation TEXT NOT NULL,
    packet_no INTEGER, created_at TEXT NOT NULL, origin_node_id TEXT);
CREATE UNIQUE INDEX q_unsent ON sync_changes (node_id, entity_type, entity_uuid)
    WHERE kind = 'queue' AND packet_no IS NULL;
CREATE INDEX q_entity ON sync_changes (node_id, entity_type, entity_uuid) WHERE kind = 'queue';
CREATE INDEX q_order ON sync_changes (node_id, packet_no, id) WHERE kind = 'queue';
CREATE UNIQUE INDEX log_entity ON sync_changes (entity_type, entity_uuid, ifnull(node_id, ''))
    WHERE kind = 'log';"""
REFS_TEXT = """CREATE TABLE entity_refs (source_type TEXT NOT NULL, source_uuid TEXT NOT NULL,
    pointer TEXT NOT NULL, target_type TEXT NOT NULL, target_uuid TEXT NOT NULL,
    PRIMARY KEY (source_type, source_uuid, pointer, target_uuid)) WITHOUT ROWID;
CREATE INDEX entity_refs_target ON entity_refs (target_uuid, target_type);"""
REFS_INT = """CREATE TABLE entity_refs (source_id INTEGER NOT NULL, pointer INTEGER NOT NULL,
    target_id INTEGER NOT NULL, PRIMARY KEY (source_id, pointer, target_id)) WITHOUT ROWID;
CREATE INDEX entity_refs_target ON entity_refs (target_id);"""
REFS_INTERNED = """CREATE TABLE entity_keys (id INTEGER PRIMARY KEY, entity_type TEXT NOT NULL,
    uuid TEXT NOT NULL, UNIQUE (uuid, entity_type));
CREATE TABLE entity_refs (source_id INTEGER NOT NULL, pointer_id INTEGER NOT NULL,
    target_id INTEGER NOT NULL, PRIMARY KEY (source_id, pointer_id, target_id)) WITHOUT ROWID;
CREATE INDEX entity_refs_target ON entity_refs (target_id);"""
REFS_LISTED = """CREATE TABLE entity_keys (id INTEGER PRIMARY KEY, entity_type TEXT NOT NULL,
    uuid TEXT NOT NULL, refs TEXT, UNIQUE (uuid, entity_type));
CREATE TABLE entity_refs (target_id INTEGER NOT NULL, source_id INTEGER NOT NULL,
    pointer TEXT NOT NULL, PRIMARY KEY (target_id, source_id, pointer)) WITHOUT ROWID;"""
REFS_TARGET = """CREATE TABLE entity_refs (target_uuid TEXT NOT NULL, target_type TEXT NOT NULL,
    source_type TEXT NOT NULL, source_uuid TEXT NOT NULL, pointer TEXT NOT NULL,
    PRIMARY KEY (target_uuid, target_type, source_type, source_uuid, pointer)) WITHOUT ROWID;
CREATE TABLE entity_ref_sources (source_type TEXT NOT NULL, source_uuid TEXT NOT NULL,
    refs TEXT NOT NULL, PRIMARY KEY (source_type, source_uuid)) WITHOUT ROWID;"""
POINTERS = ["/brigade", "/site", "/lines/*/employee", "/lines/*/employee", "/lines/*/employee"]
TARGETS = [("Brigade", str(uuid.uuid4())), ("Site", str(uuid.uuid4()))] + [
    ("Employee", str(uuid.uuid4())) for _ in range(3)]
NODE = str(uuid.uuid4())


def run(name, ddl, write):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.db")
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.executescript(ddl)
        state = {"next_id": 1}
        if name == "refs-integer":
            for t, u in TARGETS:
                c.execute("INSERT INTO entities (entity_type, uuid, updated_at, is_deleted, data)"
                          " VALUES (?, ?, 'x', 0, '{}')", (t, u))
            state["next_id"] = len(TARGETS) + 1
        took = 0.0
        for _ in range(0, N, 500):
            uuids = [ordered_uuid() for _ in range(500)]
            started = time.perf_counter()
            c.execute("BEGIN")
            write(c, uuids, state)
            c.execute("COMMIT")
            took += time.perf_counter() - started
        size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        c.close()
    print(f"{name:13s} {N / took:9.0f} reports/s   file + WAL {size >> 20:4d} MB")


def entities(c, uuids, state):
    c.executemany("INSERT INTO entities VALUES (?, ?, ?, 0, ?, NULL, ?)",
                  [("DailyReport", u, "2026-01-01T00:00:00.000000Z", DATA, NODE) for u in uuids])


def queue(c, uuids, state):
    entities(c, uuids, state)
    c.executemany("INSERT INTO sync_changes (kind, node_id, entity_type, entity_uuid, operation,"
                  " created_at) VALUES ('queue', ?, 'DailyReport', ?, 'INSERT', '2026')",
                  [(NODE, u) for u in uuids])


def refs_text(c, uuids, state):
    entities(c, uuids, state)
    c.executemany("INSERT INTO entity_refs VALUES (?, ?, ?, ?, ?)",
                  [("DailyReport", u, p, t, tu) for u in uuids for p, (t, tu) in zip(POINTERS, TARGETS)])


def refs_integer(c, uuids, state):
    first = state["next_id"]
    c.executemany("INSERT INTO entities VALUES (?, ?, ?, ?, 0, ?, NULL, ?)",
                  [(first + i, "DailyReport", u, "2026-01-01T00:00:00.000000Z", DATA, NODE)
                   for i, u in enumerate(uuids)])
    c.executemany("INSERT INTO entity_refs VALUES (?, ?, ?)",
                  [(first + i, min(k, 2), 1 + k) for i in range(len(uuids)) for k in range(5)])
    state["next_id"] = first + len(uuids)


def refs_interned(c, uuids, state):
    entities(c, uuids, state)
    # The targets' keys, once per transaction (they repeat across reports).
    c.executemany("INSERT OR IGNORE INTO entity_keys (entity_type, uuid) VALUES (?, ?)", TARGETS)
    ids = {}
    for t, tu in TARGETS:
        ids[tu] = c.execute("SELECT id FROM entity_keys WHERE uuid = ? AND entity_type = ?",
                            (tu, t)).fetchone()[0]
    # The sources' keys: one row each, their ids read back in one statement.
    c.executemany("INSERT INTO entity_keys (entity_type, uuid) VALUES ('DailyReport', ?)",
                  [(u,) for u in uuids])
    first = c.execute("SELECT id FROM entity_keys WHERE uuid = ? AND entity_type = 'DailyReport'",
                      (uuids[0],)).fetchone()[0]
    pointers = {p: k for k, p in enumerate(dict.fromkeys(POINTERS))}
    c.executemany("INSERT INTO entity_refs VALUES (?, ?, ?)",
                  [(first + i, pointers[p], ids[tu])
                   for i in range(len(uuids)) for p, (t, tu) in zip(POINTERS, TARGETS)])


def insert_joined(c, columns, picked, rows):
    """One INSERT … SELECT of `rows` (source type, source uuid, pointer,
    target type, target uuid) into entity_refs' `columns`, `picked` being
    what is selected for them, both keys found in entity_keys."""
    c.execute(f"INSERT OR IGNORE INTO entity_refs ({columns}) SELECT {picked} FROM (VALUES "
              + ",".join(["(?, ?, ?, ?, ?)"] * len(rows)) + ") AS v"
              " CROSS JOIN entity_keys s ON s.uuid = v.column2 AND s.entity_type = v.column1"
              " CROSS JOIN entity_keys t ON t.uuid = v.column5 AND t.entity_type = v.column4",
              [x for r in rows for x in r])


def refs_joined(c, uuids, state):
    entities(c, uuids, state)
    keys = [("DailyReport", u) for u in uuids] + TARGETS
    c.execute("INSERT OR IGNORE INTO entity_keys (entity_type, uuid) VALUES "
              + ",".join(["(?, ?)"] * len(keys)), [x for k in keys for x in k])
    pointers = {p: k for k, p in enumerate(dict.fromkeys(POINTERS))}
    for k in range(0, len(uuids), 100):
        sources = uuids[k:k + 100]
        # Python's SQLite 3.40 scans a row-value `IN (VALUES …)`; the store's
        # bundled SQLite does not. One source type per statement here.
        c.execute("DELETE FROM entity_refs WHERE source_id IN (SELECT id FROM entity_keys"
                  " WHERE uuid IN (" + ",".join(["?"] * len(sources)) + ")"
                  " AND entity_type = 'DailyReport')", sources)
        rows = [("DailyReport", u, pointers[p], t, tu)
                for u in sources for p, (t, tu) in zip(POINTERS, TARGETS)]
        insert_joined(c, "source_id, pointer_id, target_id", "s.id, v.column3, t.id", rows)


def refs_listed(c, uuids, state, from_list=False):
    entities(c, uuids, state)
    c.execute("INSERT OR IGNORE INTO entity_keys (entity_type, uuid) VALUES "
              + ",".join(["(?, ?)"] * len(TARGETS)), [x for k in TARGETS for x in k])
    packed = json.dumps([[t, tu, p] for p, (t, tu) in zip(POINTERS, TARGETS)])
    for k in range(0, len(uuids), 100):
        sources = uuids[k:k + 100]
        marks = ",".join(["?"] * len(sources))
        # The old rows, found through the sources' recorded lists.
        c.execute("DELETE FROM entity_refs WHERE (target_id, source_id) IN (SELECT t.id, s.id"
                  " FROM entity_keys AS s CROSS JOIN json_each(s.refs) AS j"
                  " CROSS JOIN entity_keys AS t ON t.uuid = j.value ->> 1 AND t.entity_type = j.value ->> 0"
                  " WHERE s.uuid IN (" + marks + ") AND s.entity_type = 'DailyReport'"
                  " AND s.refs IS NOT NULL)", sources)
        c.execute("INSERT INTO entity_keys (entity_type, uuid, refs) VALUES "
                  + ",".join(["('DailyReport', ?, ?)"] * len(sources))
                  + " ON CONFLICT (uuid, entity_type) DO UPDATE SET refs = excluded.refs",
                  [x for u in sources for x in (u, packed)])
        if from_list:
            c.execute("INSERT OR IGNORE INTO entity_refs (target_id, source_id, pointer)"
                      " SELECT t.id, s.id, j.value ->> 2 FROM entity_keys AS s"
                      " CROSS JOIN json_each(s.refs) AS j"
                      " CROSS JOIN entity_keys AS t ON t.uuid = j.value ->> 1 AND t.entity_type = j.value ->> 0"
                      " WHERE s.uuid IN (" + marks + ") AND s.entity_type = 'DailyReport'", sources)
        else:
            rows = [("DailyReport", u, p, t, tu)
                    for u in sources for p, (t, tu) in zip(POINTERS, TARGETS)]
            insert_joined(c, "target_id, source_id, pointer", "t.id, s.id, v.column3", rows)


def refs_target(c, uuids, state):
    entities(c, uuids, state)
    packed = json.dumps([[p, t, tu] for p, (t, tu) in zip(POINTERS, TARGETS)])
    c.executemany("INSERT INTO entity_ref_sources VALUES ('DailyReport', ?, ?)",
                  [(u, packed) for u in uuids])
    c.executemany("INSERT INTO entity_refs VALUES (?, ?, 'DailyReport', ?, ?)",
                  [(tu, t, u, p) for u in uuids for p, (t, tu) in zip(POINTERS, TARGETS)])


run("entities", ENTITIES, entities)
run("queue", ENTITIES + QUEUE, queue)
run("refs-text", ENTITIES + REFS_TEXT, refs_text)
run("refs-integer", ENTITIES_INT + REFS_INT, refs_integer)
run("refs-interned", ENTITIES + REFS_INTERNED, refs_interned)
run("refs-joined", ENTITIES + REFS_INTERNED, refs_joined)
run("refs-target", ENTITIES + REFS_TARGET, refs_target)
run("refs-listed", ENTITIES + REFS_LISTED, refs_listed)
run("refs-listed-j", ENTITIES + REFS_LISTED, lambda c, u, s: refs_listed(c, u, s, True))
