-- Full refresh of call flows from `batch`; a flow missing upstream is marked deleted.
MERGE INTO call_flows
USING batch
ON call_flows.id = batch.id
WHEN MATCHED THEN UPDATE SET
    name           = batch.name,
    created_at     = batch.created_at,
    updated_at     = batch.updated_at,
    raw            = batch.raw,
    last_synced_at = $synced_at,
    deleted_at     = NULL
WHEN NOT MATCHED THEN INSERT VALUES (
    batch.id, batch.name, batch.created_at, batch.updated_at, batch.raw, $synced_at, $synced_at, NULL
);

UPDATE call_flows SET deleted_at = $synced_at
WHERE deleted_at IS NULL AND id NOT IN (SELECT id FROM batch);
