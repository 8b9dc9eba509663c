-- The batch's rejected records (registered as `listed`), without those of erased calls and callers.
SELECT *
FROM listed
WHERE (record_id IS NULL OR sha256($salt || record_id) NOT IN (SELECT hash FROM tombstones))
  AND (json_extract_string(raw, '$.caller_number') IS NULL
       OR sha256($salt || regexp_replace(json_extract_string(raw, '$.caller_number'), '[^0-9]', '', 'g'))
          NOT IN (SELECT hash FROM tombstones));
