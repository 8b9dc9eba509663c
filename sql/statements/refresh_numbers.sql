-- Full refresh of tracking numbers from `batch`; a number missing upstream is marked deleted.
MERGE INTO tracking_numbers
USING batch
ON tracking_numbers.id = batch.id
WHEN MATCHED THEN UPDATE SET
    phone_number      = batch.phone_number,
    display_name      = batch.display_name,
    type              = batch.type,
    status            = batch.status,
    call_flow_id      = batch.call_flow_id,
    recording_enabled = batch.recording_enabled,
    created_at        = batch.created_at,
    extra             = batch.extra,
    last_synced_at    = $synced_at,
    deleted_at        = NULL
WHEN NOT MATCHED THEN INSERT VALUES (
    batch.id, batch.phone_number, batch.display_name, batch.type, batch.status, batch.call_flow_id,
    batch.recording_enabled, batch.created_at, batch.extra, $synced_at, $synced_at, NULL
);

UPDATE tracking_numbers SET deleted_at = $synced_at
WHERE deleted_at IS NULL AND id NOT IN (SELECT id FROM batch);
