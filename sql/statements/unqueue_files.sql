-- Files removed from disk (registered as `removed_files (path)`): off the queue.
DELETE FROM files_to_remove WHERE path IN (SELECT path FROM removed_files);
