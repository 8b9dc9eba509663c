-- The tables of the open database's own schema, by name.
SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = current_schema()
ORDER BY table_name;
