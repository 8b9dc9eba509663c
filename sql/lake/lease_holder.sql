-- PostgreSQL: the schema's holder, whether its lease still runs, and when it ends.
SELECT holder, expires_at > now() AS running, expires_at::TEXT AS expires_at
FROM callsync_leases WHERE lake_schema = {schema}
