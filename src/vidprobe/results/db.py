"""The results database: every run, its metrics and its curves in one SQLite file (stdlib ``sqlite3``).

:class:`ResultsDB` is the one way in: runs (add, update, find), metrics
(aggregate and per clip, with confidence intervals), curves, and tables of
runs x metrics. The tables, the constants (:data:`SCHEMA_VERSION`,
:data:`RUN_STATUSES`, :data:`AGGREGATE`, ...) and the schema-version check are
:mod:`vidprobe.results.schema`, re-exported here.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled
back on error), the journal is in WAL mode, and a busy timeout lets several
processes (sweep workers, evaluations) write to the same file at once. One
:class:`ResultsDB` object holds one connection: use it from one thread.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

from vidprobe.atomic import current_umask
from vidprobe.results.schema import (
    AGGREGATE,
    CELL_FIELDS,
    CHECKPOINT_KINDS,
    RUN_FIELDS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    ResultsDBError,
    init_schema,
)
from vidprobe.results.schema import APPLICATION_ID  # noqa: F401 (re-exported)

__all__ = ["SCHEMA_VERSION", "RUN_STATUSES", "AGGREGATE", "ResultsDB", "ResultsDBError", "collect_versions", "config_hash"]



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj if obj is not None else {}, sort_keys=True, default=str, separators=(",", ":"))


def config_hash(config: Mapping[str, Any] | None) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys, non-JSON values as ``str``)."""
    return hashlib.sha256(_canonical_json(config).encode()).hexdigest()


def collect_versions() -> dict[str, str]:
    """Python, platform, and the versions of the packages that shape results (those installed)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("vidprobe", "torch", "numpy", "roma", "transformers", "diffusers", "safetensors", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    torch_mod = sys.modules.get("torch")
    if torch_mod is not None and getattr(torch_mod.version, "cuda", None):
        out["cuda"] = str(torch_mod.version.cuda)
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        if commit:
            out["git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _num(x: Any) -> float | None:
    """A float for SQLite, with NaN/Inf/None stored as NULL."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _ci_bounds(ci: Any) -> tuple[float | None, float | None]:
    if ci is None:
        return None, None
    if hasattr(ci, "low") and hasattr(ci, "high"):
        return _num(ci.low), _num(ci.high)
    low, high = ci
    return _num(low), _num(high)


class ResultsDB:
    """Open (creating if needed) the results database at ``path``.

    ``timeout`` (seconds) is how long a writer waits for another process's
    transaction before failing. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise ResultsDBError(f"{self.path}: is a directory, expected a results database file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        try:
            self._con = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            if created:  # SQLite creates it 0644 whatever the umask; its -wal/-shm files copy this mode
                with suppress(OSError):
                    os.chmod(self.path, 0o666 & ~current_umask())
            self._con.row_factory = sqlite3.Row
            self._con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._con.execute("PRAGMA foreign_keys = ON")
            mode = self._con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ResultsDBError(f"{self.path}: could not switch the journal to WAL mode (got {mode!r})")
            self._con.execute("PRAGMA synchronous = NORMAL")
            self._init_schema()
        except sqlite3.DatabaseError as e:
            self._close_quietly()
            raise ResultsDBError(f"{self.path}: not a usable vidprobe results database ({e})") from e

    # -- connection ---------------------------------------------------------------------------------------------

    def _close_quietly(self) -> None:
        con = getattr(self, "_con", None)
        if con is not None:
            try:
                con.close()
            except sqlite3.Error:
                pass
            self._con = None

    def close(self) -> None:
        self._close_quietly()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: ``BEGIN IMMEDIATE`` (waits for other writers), commit, or roll back on error."""
        if self._con is None:
            raise ResultsDBError(f"{self.path}: the database is closed")
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        else:
            self._con.execute("COMMIT")

    def _init_schema(self) -> None:
        with self.transaction() as con:
            init_schema(con, self.path)

    @property
    def schema_version(self) -> int:
        return int(self._con.execute("PRAGMA user_version").fetchone()[0])

    # -- runs ---------------------------------------------------------------------------------------------------

    def add_run(
        self,
        kind: str,
        *,
        name: str | None = None,
        backbone: str | None = None,
        dataset: str | None = None,
        layer: int | str | None = None,
        timestep: int | float | None = None,
        probe: str | None = None,
        seed: int | None = None,
        status: str = "running",
        config: Mapping[str, Any] | None = None,
        versions: Mapping[str, str] | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_kind: str | None = None,
        parent_id: int | None = None,
    ) -> int:
        """Record a run and return its ``run_id``. ``versions`` defaults to :func:`collect_versions`."""
        if not kind:
            raise ValueError("ResultsDB.add_run: kind is required (e.g. 'train', 'evaluate')")
        self._check_status(status)
        self._check_checkpoint_kind(checkpoint_kind)
        now = _now()
        cfg_json = _canonical_json(config)
        ver_json = _canonical_json(dict(versions) if versions is not None else collect_versions())
        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO runs (created, updated, kind, name, backbone, dataset, layer, timestep, probe, seed, "
                "status, config, config_hash, versions, checkpoint, checkpoint_kind, parent_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now, now, kind, name, backbone, dataset, layer, timestep, probe, seed, status,
                    cfg_json, config_hash(config), ver_json,
                    None if checkpoint is None else str(checkpoint), checkpoint_kind, parent_id,
                ),
            )  # fmt: skip
            return int(cur.lastrowid)

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"ResultsDB: status must be one of {RUN_STATUSES}, got {status!r}")

    @staticmethod
    def _check_checkpoint_kind(kind: str | None) -> None:
        if kind is not None and kind not in CHECKPOINT_KINDS:
            raise ValueError(f"ResultsDB: checkpoint_kind must be one of {CHECKPOINT_KINDS} or None, got {kind!r}")

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Change run fields (``status``, ``checkpoint``, ``checkpoint_kind``, ``name``, ``config``, ...)."""
        allowed = set(RUN_FIELDS) - {"config_hash"} | {"config", "versions"}
        bad = sorted(set(fields) - allowed)
        if bad:
            raise ValueError(f"ResultsDB.update_run: unknown field(s) {bad}; allowed: {sorted(allowed)}")
        if "status" in fields:
            self._check_status(fields["status"])
        if "checkpoint_kind" in fields:
            self._check_checkpoint_kind(fields["checkpoint_kind"])
        values = dict(fields)
        if "config" in values:
            values["config_hash"] = config_hash(values["config"])
            values["config"] = _canonical_json(values["config"])
        if "versions" in values:
            values["versions"] = _canonical_json(values["versions"])
        if "checkpoint" in values and values["checkpoint"] is not None:
            values["checkpoint"] = str(values["checkpoint"])
        values["updated"] = _now()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as con:
            cur = con.execute(f"UPDATE runs SET {cols} WHERE run_id = ?", (*values.values(), run_id))
            if cur.rowcount == 0:
                raise KeyError(f"{self.path}: no run with run_id {run_id}")

    def finish_run(self, run_id: int, status: str = "done", **fields: Any) -> None:
        """Mark a run ``done`` (or ``failed``), optionally updating other fields in the same write."""
        self.update_run(run_id, status=status, **fields)

    def delete_run(self, run_id: int) -> None:
        """Remove a run with its metrics and curves."""
        with self.transaction() as con:
            con.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["config"] = json.loads(d["config"]) if d.get("config") else {}
        d["versions"] = json.loads(d["versions"]) if d.get("versions") else {}
        return d

    def get_run(self, run_id: int) -> dict[str, Any]:
        row = self._con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"{self.path}: no run with run_id {run_id}")
        return self._run_dict(row)

    def _where(self, filters: Mapping[str, Any], allowed: Sequence[str]) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for key, value in filters.items():
            if key == "config":
                key, value = "config_hash", config_hash(value)
            if key not in allowed:
                raise ValueError(f"ResultsDB: cannot filter runs by {key!r}; allowed: {sorted(allowed)} and 'config'")
            if value is None:
                clauses.append(f"runs.{key} IS NULL")
            else:
                clauses.append(f"runs.{key} = ?")
                params.append(value)
        return (" AND ".join(clauses) if clauses else "1"), params

    def runs(self, status: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """All runs matching ``filters`` (column = value; ``None`` matches NULL), oldest first."""
        where, params = self._where(filters, CELL_FIELDS)
        if status is not None:
            where += " AND runs.status = ?"
            params.append(status)
        rows = self._con.execute(f"SELECT * FROM runs WHERE {where} ORDER BY run_id", params).fetchall()
        return [self._run_dict(r) for r in rows]

    def find_run(self, status: str | None = "done", **cell: Any) -> dict[str, Any] | None:
        """The latest run matching a sweep cell (``kind``, ``backbone``, ``dataset``, ``layer``, ``timestep``,
        ``probe``, ``seed``, ``config=...``, ...), by default only among finished (``done``) runs; ``None``
        if there is none. Sweeps call it to skip cells already done."""
        found = self.runs(status=status, **cell)
        return found[-1] if found else None

    # -- metrics ------------------------------------------------------------------------------------------------

    def add_metrics(
        self,
        run_id: int,
        metrics: Mapping[str, Any],
        split: str = "test",
        scope: str = AGGREGATE,
        ci: Mapping[str, Any] | None = None,
    ) -> None:
        """Store ``{metric: value}`` for a run (replacing earlier values of the same metric/split/scope).

        ``ci`` maps metric names to an interval: an object with ``low``/``high``
        (e.g. :class:`vidprobe.metrics.stats.CI`) or a ``(low, high)`` pair.
        NaN and infinite values are stored as NULL. One transaction.
        """
        if ci is not None:
            extra = sorted(set(ci) - set(metrics))
            if extra:
                raise ValueError(f"ResultsDB.add_metrics: intervals given for metrics without values: {extra}")
        rows = []
        for name, value in metrics.items():
            low, high = _ci_bounds(None if ci is None else ci.get(name))
            rows.append((run_id, str(name), split, str(scope), _num(value), low, high))
        self._insert_metrics(rows)

    def add_clip_metrics(
        self, run_id: int, clips: Iterable[tuple[str, Mapping[str, Any]]], split: str = "test"
    ) -> None:
        """Store per-clip metrics ``[(clip_id, {metric: value}), ...]`` (scope = clip id) in one transaction."""
        rows = []
        for clip_id, values in clips:
            if str(clip_id) == AGGREGATE:
                raise ValueError(f"ResultsDB.add_clip_metrics: clip id {AGGREGATE!r} is reserved")
            rows += [(run_id, str(k), split, str(clip_id), _num(v), None, None) for k, v in values.items()]
        self._insert_metrics(rows)

    def _insert_metrics(self, rows: list[tuple]) -> None:
        try:
            with self.transaction() as con:
                con.executemany(
                    "INSERT OR REPLACE INTO metrics (run_id, metric, split, scope, value, ci_low, ci_high) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.IntegrityError as e:
            raise KeyError(f"{self.path}: metrics for a run that does not exist ({e})") from e

    def get_metrics(self, run_id: int, split: str = "test", scope: str = AGGREGATE) -> dict[str, float | None]:
        """``{metric: value}`` of one run, split and scope."""
        rows = self._con.execute(
            "SELECT metric, value FROM metrics WHERE run_id = ? AND split = ? AND scope = ? ORDER BY metric",
            (run_id, split, scope),
        ).fetchall()
        return {r["metric"]: r["value"] for r in rows}

    def metric_rows(self, run_id: int | None = None, **where: Any) -> list[dict[str, Any]]:
        """Raw metric rows (``run_id``, ``metric``, ``split``, ``scope``, ``value``, ``ci_low``, ``ci_high``)."""
        allowed = ("metric", "split", "scope")
        bad = sorted(set(where) - set(allowed))
        if bad:
            raise ValueError(f"ResultsDB.metric_rows: unknown filter(s) {bad}; allowed: {list(allowed)}")
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        for k, v in where.items():
            clauses.append(f"{k} = ?")
            params.append(v)
        sql = "SELECT * FROM metrics" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        return [dict(r) for r in self._con.execute(sql + " ORDER BY run_id, split, scope, metric", params)]

    def clip_metrics(self, run_id: int, metric: str, split: str = "test") -> dict[str, float | None]:
        """``{clip_id: value}`` of one metric of a run (every scope but the aggregate)."""
        rows = self._con.execute(
            "SELECT scope, value FROM metrics WHERE run_id = ? AND metric = ? AND split = ? AND scope != ? "
            "ORDER BY scope",
            (run_id, metric, split, AGGREGATE),
        ).fetchall()
        return {r["scope"]: r["value"] for r in rows}

    # -- curves -------------------------------------------------------------------------------------------------

    def add_curve(self, run_id: int, name: str, points: Iterable[tuple[int, float]]) -> None:
        """Store ``(step, value)`` points of a curve (a step already stored is replaced). One transaction."""
        rows = [(run_id, name, int(step), _num(value)) for step, value in points]
        try:
            with self.transaction() as con:
                con.executemany(
                    "INSERT OR REPLACE INTO curves (run_id, name, step, value) VALUES (?, ?, ?, ?)", rows
                )
        except sqlite3.IntegrityError as e:
            raise KeyError(f"{self.path}: curve for a run that does not exist ({e})") from e

    def add_curve_point(self, run_id: int, name: str, step: int, value: float) -> None:
        self.add_curve(run_id, name, [(step, value)])

    def curve(self, run_id: int, name: str) -> list[tuple[int, float | None]]:
        rows = self._con.execute(
            "SELECT step, value FROM curves WHERE run_id = ? AND name = ? ORDER BY step", (run_id, name)
        ).fetchall()
        return [(r["step"], r["value"]) for r in rows]

    def curve_names(self, run_id: int) -> list[str]:
        return [
            r[0] for r in self._con.execute("SELECT DISTINCT name FROM curves WHERE run_id = ? ORDER BY name", (run_id,))
        ]

    # -- tables -------------------------------------------------------------------------------------------------

    def metric_names(self, split: str = "test", scope: str = AGGREGATE) -> list[str]:
        rows = self._con.execute(
            "SELECT DISTINCT metric FROM metrics WHERE split = ? AND scope = ? ORDER BY metric", (split, scope)
        )
        return [r[0] for r in rows]

    def table(
        self,
        metrics: Sequence[str] | None = None,
        split: str = "test",
        scope: str = AGGREGATE,
        status: str | None = "done",
        with_ci: bool = False,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """One plain dict per run: the run's cell fields plus the requested metric values.

        ``metrics`` defaults to every metric stored for ``split``/``scope``;
        a missing value is ``None``. ``with_ci`` adds ``<metric>_ci_low`` and
        ``<metric>_ci_high``. ``filters`` select runs as in :meth:`runs`.
        Runs without any of the metrics are left out. Ordered by ``run_id``.
        """
        names = list(metrics) if metrics is not None else self.metric_names(split, scope)
        runs = self.runs(status=status, **filters)
        if not runs or not names:
            return []
        ids = [r["run_id"] for r in runs]
        by_run: dict[int, dict[str, sqlite3.Row]] = {}
        qmarks = ",".join("?" * len(names))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._con.execute(
                f"SELECT * FROM metrics WHERE split = ? AND scope = ? AND metric IN ({qmarks}) "
                f"AND run_id IN ({','.join('?' * len(chunk))})",
                (split, scope, *names, *chunk),
            )
            for r in rows:
                by_run.setdefault(r["run_id"], {})[r["metric"]] = r
        out = []
        keep = ("run_id", "kind", "name", "backbone", "dataset", "layer", "timestep", "probe", "seed",
                "status", "checkpoint_kind", "parent_id", "created")  # fmt: skip
        for run in runs:
            got = by_run.get(run["run_id"])
            if not got:
                continue
            row = {k: run[k] for k in keep}
            for n in names:
                m = got.get(n)
                row[n] = None if m is None else m["value"]
                if with_ci:
                    row[f"{n}_ci_low"] = None if m is None else m["ci_low"]
                    row[f"{n}_ci_high"] = None if m is None else m["ci_high"]
            out.append(row)
        return out
