"""Results: the SQLite store of every run, metric and curve (:mod:`vidprobe.results.db`)."""

from vidprobe.results.db import (
    AGGREGATE,
    RUN_STATUSES,
    SCHEMA_VERSION,
    ResultsDB,
    ResultsDBError,
    collect_versions,
    config_hash,
)

__all__ = [
    "AGGREGATE",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "ResultsDB",
    "ResultsDBError",
    "collect_versions",
    "config_hash",
]
