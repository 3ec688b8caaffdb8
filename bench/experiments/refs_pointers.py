#!/usr/bin/env python3
"""What a reference row's pointer costs SQLite as text or as an interned
integer (docs/benchmarks.md, session 19; SQLite migration 9). Not part of
the suite: a design experiment with Python's sqlite3 module and the store's
pragmas (WAL, synchronous = FULL).

Each report has five references (/brigade, /site, three /lines/*/employee)
to targets drawn at random from TARGETS entities; 500 reports per
transaction, written as the store writes them: the keys interned first,
then one INSERT … SELECT per 500 reference rows that finds both keys in
`entity_keys`. The two variants differ only in `entity_refs.pointer`:

  text-ptr  the pointer's text (migration 8's layout)
  int-ptr   an integer standing for it (migration 9's `pointer_id`)

    TARGETS=3000 python3 bench/experiments/refs_pointers.py [N]

TARGETS=5 is the suite's data (every report references the same five
entities); real documents reference thousands of catalogue entries, and
then the target index takes every row on a different page. Python's own
per-row cost is in every figure, so compare the variants with each other.
"""
import itertools
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
TARGETS = [("Employee", str(uuid.uuid4())) for _ in range(int(os.environ.get("TARGETS", "5")))]
POINTERS = ["/brigade", "/site", "/lines/*/employee", "/lines/*/employee", "/lines/*/employee"]
POINTER_IDS = {p: i for i, p in enumerate(dict.fromkeys(POINTERS))}
_counter = itertools.count(1 << 40)


def ordered_uuid():
    """A uuid whose first 48 bits grow, like a v7 uuid's timestamp."""
    n = next(_counter)
    return str(uuid.UUID(f"{n:012x}" + uuid.uuid4().hex[12:]))


def ddl(pointer_type):
    return f"""CREATE TABLE entity_keys (id INTEGER PRIMARY KEY, entity_type TEXT NOT NULL,
    uuid TEXT NOT NULL, UNIQUE (uuid, entity_type));
CREATE TABLE entity_refs (source_id INTEGER NOT NULL, pointer {pointer_type} NOT NULL,
    target_id INTEGER NOT NULL, PRIMARY KEY (source_id, pointer, target_id)) WITHOUT ROWID;
CREATE INDEX entity_refs_target ON entity_refs (target_id);"""


def run(name, pointer_type, pointer):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.db")
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.executescript(ddl(pointer_type))
        writing = committing = 0.0
        for _ in range(0, N, 500):
            sources = [ordered_uuid() for _ in range(500)]
            rows = [("DailyReport", u, pointer(p)) + random.choice(TARGETS)
                    for u in sources for p in POINTERS]
            c.execute("BEGIN")
            keys = list(dict.fromkeys([r[:2] for r in rows] + [r[3:] for r in rows]))
            for k in range(0, len(keys), 500):
                part = keys[k:k + 500]
                c.execute("INSERT OR IGNORE INTO entity_keys (entity_type, uuid) VALUES "
                          + ",".join(["(?, ?)"] * len(part)), [x for key in part for x in key])
            started = time.perf_counter()
            for k in range(0, len(rows), 500):
                part = rows[k:k + 500]
                c.execute("INSERT OR IGNORE INTO entity_refs (source_id, pointer, target_id)"
                          " SELECT s.id, v.column3, t.id FROM (VALUES "
                          + ",".join(["(?, ?, ?, ?, ?)"] * len(part)) + ") AS v"
                          " CROSS JOIN entity_keys s ON s.uuid = v.column2 AND s.entity_type = v.column1"
                          " CROSS JOIN entity_keys t ON t.uuid = v.column5 AND t.entity_type = v.column4",
                          [x for r in part for x in r])
            written = time.perf_counter()
            c.execute("COMMIT")
            writing += written - started
            committing += time.perf_counter() - written
        size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        c.close()
    print(f"{name:9s} targets {len(TARGETS):5d}  references {writing / N * 1e6:6.2f} µs/report"
          f"  commit {committing / N * 1e6:6.2f} µs/report  file + WAL {size >> 20:4d} MB")


for _ in range(2):
    run("text-ptr", "TEXT", lambda p: p)
    run("int-ptr", "INTEGER", lambda p: POINTER_IDS[p])
