-- Calls deleted upstream whose media is still held ([media] on_upstream_delete = "remove"),
-- into temp table `doomed_calls` for remove_media_of; then marked as done.
CREATE OR REPLACE TEMP TABLE doomed_calls AS
SELECT id FROM deleted_calls WHERE NOT media_removed;

UPDATE deleted_calls SET media_removed = true WHERE NOT media_removed;
