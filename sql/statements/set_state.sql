INSERT OR REPLACE INTO sync_state (key, value, updated_at) VALUES ($key, $value, $updated_at);
