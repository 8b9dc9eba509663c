-- The calls to erase (registered as `forget_values (kind, value)`: kind call_id with the id,
-- or caller_number with the number's digits), live or deleted upstream, and the given ids
-- even if no call holds them any more (their media or rejected records may): into temp
-- table `doomed_calls`, for remove_media_of and remove_forgotten.
CREATE OR REPLACE TEMP TABLE doomed_calls AS
WITH ids AS (SELECT value AS id FROM forget_values WHERE kind = 'call_id'),
numbers AS (SELECT value AS digits FROM forget_values WHERE kind = 'caller_number')
SELECT id FROM calls
WHERE id IN (SELECT id FROM ids) OR regexp_replace(caller_number, '[^0-9]', '', 'g') IN (SELECT digits FROM numbers)
UNION
SELECT id FROM deleted_calls
WHERE id IN (SELECT id FROM ids) OR regexp_replace(caller_number, '[^0-9]', '', 'g') IN (SELECT digits FROM numbers)
UNION
SELECT id FROM ids;
