-- `callsync forget --list`: the tombstones by date, without what they stand for.
SELECT created_at, kind, left(hash, 12) AS hash_prefix, run_id
FROM tombstones
ORDER BY created_at, kind, hash;
