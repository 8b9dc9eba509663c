UPDATE runs SET
    finished_at     = $finished_at,
    status          = $status,
    windows_done    = $windows_done,
    windows_skipped = $windows_skipped,
    windows_failed  = $windows_failed,
    calls_new       = $calls_new,
    calls_updated   = $calls_updated,
    calls_unchanged = $calls_unchanged,
    rejected        = $rejected,
    refetches       = $refetches,
    requests        = $requests,
    retries         = $retries,
    rate_limited    = $rate_limited,
    summary         = $summary,
    error           = $error
WHERE run_id = $run_id;
