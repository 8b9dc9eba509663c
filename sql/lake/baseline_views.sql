-- The views the migrations up to the lake's baseline leave, oldest first (a view is created
-- after the views it reads).
SELECT view_name, sql FROM duckdb_views()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
ORDER BY view_oid;
