-- The windows committed so far in any of the given scopes (a backfill skips their days).
SELECT window_start, window_end FROM sync_windows WHERE list_contains($scopes, scope);
