-- Runs still `running` when a new run holds the lock: their process died (kill -9, power
-- loss, a second signal) before recording an outcome.
UPDATE runs SET status = 'interrupted', error = 'the process ended before the run finished'
WHERE status = 'running' AND finished_at IS NULL;
