"""callsync: keep a local, queryable DuckDB copy of a call-tracking account."""

__version__ = "0.1.0"
