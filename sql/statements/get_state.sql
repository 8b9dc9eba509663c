SELECT value FROM sync_state WHERE key = $key;
