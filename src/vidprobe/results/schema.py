"""The results database schema: tables, constants, and the create-or-check of a file's schema version.

Schema (version :data:`SCHEMA_VERSION`, stored in ``PRAGMA user_version``;
``PRAGMA application_id`` marks the file as vidprobe's):

``runs``
    ``run_id`` (integer key), ``created``/``updated`` (ISO-8601 UTC),
    ``kind`` (``train``, ``evaluate``, ``consistency``, ...), ``name``,
    the sweep cell ``backbone``, ``dataset``, ``layer``, ``timestep``,
    ``probe`` (preset name), ``seed``; ``status`` (``running`` | ``done`` |
    ``failed``); ``config`` (full config, JSON) and ``config_hash``
    (SHA-256 of its canonical JSON); ``versions`` (package versions, JSON);
    ``checkpoint`` (path) and ``checkpoint_kind`` (``last`` | ``best``:
    which checkpoint an evaluation scored); ``parent_id`` (e.g. the training
    run an evaluation belongs to).
``metrics``
    one row per (run, metric, split, scope): ``value``, ``ci_low``,
    ``ci_high`` (NULL when unknown or NaN); ``scope`` is ``aggregate`` or a
    clip id.
``curves``
    ``(run_id, name, step, value)``: training curves.

:func:`init_schema` creates the tables in an empty file, or checks that an
existing one is vidprobe's (``application_id``) at a schema version this code
reads; a newer version, another application's file, or an older version
without a migration is refused with :class:`ResultsDBError`. Queries are
:class:`~vidprobe.results.db.ResultsDB`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = [
    "SCHEMA_VERSION",
    "APPLICATION_ID",
    "RUN_STATUSES",
    "CHECKPOINT_KINDS",
    "AGGREGATE",
    "RUN_FIELDS",
    "CELL_FIELDS",
    "ResultsDBError",
    "init_schema",
]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x76707262  # "vprb"
RUN_STATUSES = ("running", "done", "failed")
CHECKPOINT_KINDS = ("last", "best")
AGGREGATE = "aggregate"

# Columns a caller may set on a run / filter runs by.
RUN_FIELDS = (
    "kind", "name", "backbone", "dataset", "layer", "timestep", "probe", "seed", "status",
    "config_hash", "checkpoint", "checkpoint_kind", "parent_id",
)  # fmt: skip
CELL_FIELDS = ("name", "backbone", "dataset", "layer", "timestep", "probe", "seed", "config_hash",
               "checkpoint_kind", "parent_id", "kind")  # fmt: skip

_SCHEMA = f"""
CREATE TABLE runs (
    run_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created         TEXT NOT NULL,
    updated         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT,
    backbone        TEXT,
    dataset         TEXT,
    layer           NUMERIC,
    timestep        NUMERIC,
    probe           TEXT,
    seed            INTEGER,
    status          TEXT NOT NULL CHECK (status IN {RUN_STATUSES!r}),
    config          TEXT NOT NULL DEFAULT '{{}}',
    config_hash     TEXT,
    versions        TEXT NOT NULL DEFAULT '{{}}',
    checkpoint      TEXT,
    checkpoint_kind TEXT CHECK (checkpoint_kind IS NULL OR checkpoint_kind IN {CHECKPOINT_KINDS!r}),
    parent_id       INTEGER REFERENCES runs(run_id) ON DELETE SET NULL
);
CREATE INDEX runs_cell ON runs (kind, backbone, dataset, layer, timestep, probe, seed);
CREATE INDEX runs_config ON runs (config_hash);
CREATE TABLE metrics (
    run_id  INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    metric  TEXT NOT NULL,
    split   TEXT NOT NULL,
    scope   TEXT NOT NULL DEFAULT '{AGGREGATE}',
    value   REAL,
    ci_low  REAL,
    ci_high REAL,
    PRIMARY KEY (run_id, metric, split, scope)
);
CREATE INDEX metrics_by_name ON metrics (metric, split, scope);
CREATE TABLE curves (
    run_id INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    step   INTEGER NOT NULL,
    value  REAL,
    PRIMARY KEY (run_id, name, step)
);
"""


class ResultsDBError(RuntimeError):
    """A results database that cannot be opened or a request it cannot honour."""


def init_schema(con: sqlite3.Connection, path: Path) -> None:
    """Create the schema in an empty database or check an existing one (inside the caller's transaction)."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    app = con.execute("PRAGMA application_id").fetchone()[0]
    if version == 0:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables:
            raise ResultsDBError(
                f"{path}: an SQLite file with other tables ({', '.join(tables)}), "
                "not a vidprobe results database"
            )
        # statement by statement: sqlite3's executescript would commit the open transaction
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                con.execute(stmt)
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    elif app != APPLICATION_ID:
        raise ResultsDBError(f"{path}: application_id {app:#x} is not vidprobe's results database")
    elif version > SCHEMA_VERSION:
        raise ResultsDBError(
            f"{path}: schema version {version} is newer than this vidprobe supports "
            f"({SCHEMA_VERSION}); upgrade vidprobe"
        )
    elif version < SCHEMA_VERSION:  # pragma: no cover - no older schema exists yet
        raise ResultsDBError(f"{path}: schema version {version} has no migration to {SCHEMA_VERSION}")
