INSERT INTO runs (run_id, command, args, started_at, status)
VALUES ($run_id, $command, $args, $started_at, 'running');
