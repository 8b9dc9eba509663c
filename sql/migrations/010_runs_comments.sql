-- 009 listed 'aborted' among the statuses of `runs`, but a run that stops on an error
-- (bad token, missing scope, API unreachable, full disk) is recorded 'failed', with its
-- error; 'aborted' is only what its summary line says. And `error` now also says why a
-- run that went to its end failed.
COMMENT ON COLUMN runs.status IS 'running | ok | failed (also a run stopped by an error, see error) | paused (request budget) | interrupted (a signal, or its process died).';
COMMENT ON COLUMN runs.error IS 'Why it stopped, or why it failed (its first failure: a window, downloads, rejected records); NULL for a run that ended ok.';
