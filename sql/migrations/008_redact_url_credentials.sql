-- Media URLs were stored as the API sent them, user:password@ included. callsync now
-- refuses such URLs and stores them with the credentials replaced by ***@.
UPDATE calls SET recording_url = regexp_replace(recording_url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1***@')
WHERE recording_url LIKE '%@%';
UPDATE calls SET transcript_url = regexp_replace(transcript_url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1***@')
WHERE transcript_url LIKE '%@%';
UPDATE media_jobs SET url = regexp_replace(url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1***@')
WHERE url LIKE '%@%';
