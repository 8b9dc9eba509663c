-- Whether a commit has anything to check against: tombstones, and calls deleted upstream.
SELECT (SELECT count(*) FROM tombstones), (SELECT count(*) FROM deleted_calls);
