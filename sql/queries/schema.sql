-- The tables and views, and each column with its type: what each holds, in the schema's own words.
-- param: name = %  a table or view, or a LIKE pattern such as call% (default: all of them)
WITH objects AS (
    SELECT 'table' AS kind, table_name AS name, comment
    FROM duckdb_tables()
    WHERE database_name = current_database() AND schema_name = current_schema()
    UNION ALL
    SELECT 'view', view_name, comment
    FROM duckdb_views()
    WHERE database_name = current_database() AND schema_name = current_schema() AND NOT internal
),
described AS (
    SELECT kind, name, NULL AS "column", NULL AS type, comment AS meaning, -1 AS position
    FROM objects
    UNION ALL
    SELECT o.kind, o.name, c.column_name, c.data_type, c.comment, c.column_index
    FROM objects AS o
    JOIN duckdb_columns() AS c
      ON c.database_name = current_database() AND c.schema_name = current_schema() AND c.table_name = o.name
)
SELECT kind, name, "column", type, meaning
FROM described
WHERE name LIKE $name
ORDER BY kind, name, position
