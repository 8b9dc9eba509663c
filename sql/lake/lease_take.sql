-- PostgreSQL: take the schema's lease, or renew our own; another holder's stands until it expires.
INSERT INTO callsync_leases AS held VALUES ({schema}, {holder}, now(), now() + make_interval(secs => {seconds}))
ON CONFLICT (lake_schema) DO UPDATE SET
    holder     = excluded.holder,
    taken_at   = CASE WHEN held.holder = excluded.holder THEN held.taken_at ELSE excluded.taken_at END,
    expires_at = excluded.expires_at
WHERE held.expires_at < now() OR held.holder = excluded.holder
