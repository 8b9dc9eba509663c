-- Full refresh of call flows from `batch`; a flow missing upstream is marked deleted.
INSERT INTO call_flows
SELECT id, name, created_at, updated_at, raw, $synced_at, $synced_at, NULL
FROM batch
ON CONFLICT (id) DO UPDATE SET
    name           = excluded.name,
    created_at     = excluded.created_at,
    updated_at     = excluded.updated_at,
    raw            = excluded.raw,
    last_synced_at = excluded.last_synced_at,
    deleted_at     = NULL;

UPDATE call_flows SET deleted_at = $synced_at
WHERE deleted_at IS NULL AND id NOT IN (SELECT id FROM batch);
