-- The tables the migrations up to the lake's baseline leave in a scratch DuckDB, column by
-- column, to create them in a new lake schema (pipeline.lake.create_baseline).
SELECT c.table_name, c.column_name, c.data_type, c.is_nullable, c.column_default
FROM duckdb_columns() AS c
JOIN duckdb_tables() AS t ON t.table_oid = c.table_oid
WHERE t.database_name = current_database() AND t.schema_name = 'main'
ORDER BY t.table_oid, c.column_index;
