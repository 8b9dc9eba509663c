-- PostgreSQL: when the oldest running lease of another schema was taken. Files its writer has
-- not committed yet are newer than this, so compact spares them (NULL: no other writer).
SELECT min(taken_at)::TEXT FROM callsync_leases WHERE lake_schema <> {schema} AND expires_at > now()
