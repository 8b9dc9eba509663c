-- Full refresh of tracking numbers from `batch`; a number missing upstream is marked deleted.
INSERT INTO tracking_numbers
SELECT id, phone_number, display_name, type, status, call_flow_id, recording_enabled, created_at,
       extra, $synced_at, $synced_at, NULL
FROM batch
ON CONFLICT (id) DO UPDATE SET
    phone_number      = excluded.phone_number,
    display_name      = excluded.display_name,
    type              = excluded.type,
    status            = excluded.status,
    call_flow_id      = excluded.call_flow_id,
    recording_enabled = excluded.recording_enabled,
    created_at        = excluded.created_at,
    extra             = excluded.extra,
    last_synced_at    = excluded.last_synced_at,
    deleted_at        = NULL;

UPDATE tracking_numbers SET deleted_at = $synced_at
WHERE deleted_at IS NULL AND id NOT IN (SELECT id FROM batch);
