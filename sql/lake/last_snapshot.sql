-- The lake's newest snapshot: what a reader attaching now sees.
SELECT snapshot_id, snapshot_time FROM ducklake_snapshots('lake') ORDER BY snapshot_id DESC LIMIT 1;
