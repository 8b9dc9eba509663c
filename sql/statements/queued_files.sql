-- Recording files whose rows are gone, to remove from the media folder.
SELECT path FROM files_to_remove ORDER BY path;
