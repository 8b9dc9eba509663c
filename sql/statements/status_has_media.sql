-- Whether the media tables exist yet (a database from before migration 002), for `callsync status`.
SELECT count(*) > 0 FROM duckdb_tables() WHERE table_name = 'media_jobs';
