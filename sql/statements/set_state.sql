-- One named value. MERGE, not INSERT OR REPLACE: a DuckLake table has no key to replace on.
MERGE INTO sync_state
USING (SELECT $key AS key, $value AS value, $updated_at AS updated_at) AS given
ON sync_state.key = given.key
WHEN MATCHED THEN UPDATE SET value = given.value, updated_at = given.updated_at
WHEN NOT MATCHED THEN INSERT (key, value, updated_at) VALUES (given.key, given.value, given.updated_at);
