DELETE FROM sync_state WHERE key = $key;
