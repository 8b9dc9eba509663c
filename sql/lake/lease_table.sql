-- PostgreSQL, in the lake's catalog database: who writes each lake schema (pipeline/lease.py).
-- One row per schema; a holder that stops renewing stops blocking once expires_at passes,
-- by PostgreSQL's clock (one clock for every machine).
CREATE TABLE IF NOT EXISTS callsync_leases (
    lake_schema TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,         -- host, pid and a random token
    taken_at    TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
)
