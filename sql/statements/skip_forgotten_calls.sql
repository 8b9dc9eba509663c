-- The batch's calls (registered as `listed`), without those erased by `callsync forget`
-- (a tombstone holds sha256(salt || id) or sha256(salt || the caller number's digits)).
-- Run only when there are tombstones.
SELECT *
FROM listed
WHERE sha256($salt || id) NOT IN (SELECT hash FROM tombstones)
  AND (caller_number IS NULL
       OR sha256($salt || regexp_replace(caller_number, '[^0-9]', '', 'g')) NOT IN (SELECT hash FROM tombstones));
