-- The live data files of each table of one schema, from DuckLake's own catalog tables
-- (attached beside the lake as __ducklake_metadata_<alias>): what `status` and `compact` count.
SELECT t.table_name, count(f.data_file_id) AS files, coalesce(sum(f.file_size_bytes), 0) AS bytes
FROM __ducklake_metadata_lake.ducklake_table AS t
JOIN __ducklake_metadata_lake.ducklake_schema AS s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
LEFT JOIN __ducklake_metadata_lake.ducklake_data_file AS f ON f.table_id = t.table_id AND f.end_snapshot IS NULL
WHERE t.end_snapshot IS NULL AND s.schema_name = $schema
GROUP BY t.table_name
ORDER BY t.table_name;
