-- The schema describes itself: a comment on every table and view, and on every column of
-- every table, for the analysts who browse it (`callsync query schema`; the `comment` of
-- duckdb_tables(), duckdb_views() and duckdb_columns(), which SQL clients read).
-- A DuckLake takes comments on tables, their columns and views, not on the columns of a
-- view, so a view's comment says what its columns mean.
-- A migration that adds a column comments it too; one that replaces a view comments it
-- again (CREATE OR REPLACE drops the comment). tests/test_analytics.py holds every table, view
-- and table column to having one.

COMMENT ON TABLE calls IS 'One row per call the API lists (id is unique). Calls deleted upstream move to deleted_calls, erased ones are gone (see tombstones).';
COMMENT ON COLUMN calls.id IS 'The call''s id at the vendor; unique.';
COMMENT ON COLUMN calls.tracking_number IS 'The tracking number called, E.164 (matches tracking_numbers.phone_number).';
COMMENT ON COLUMN calls.caller_number IS 'The caller''s number, E.164. Personal data: `callsync forget --caller-number` erases it.';
COMMENT ON COLUMN calls.duration_seconds IS 'Length of the call in seconds.';
COMMENT ON COLUMN calls.outcome IS 'qualified | unqualified | voicemail | abandoned. May change after the call (re-read by later syncs).';
COMMENT ON COLUMN calls.campaign_id IS 'The campaign the call was bought for.';
COMMENT ON COLUMN calls.affiliate_id IS 'The affiliate that sent the call.';
COMMENT ON COLUMN calls.source IS 'Traffic source, e.g. google_ads, facebook, tv.';
COMMENT ON COLUMN calls.caller_city IS 'The caller''s city, as the vendor located it.';
COMMENT ON COLUMN calls.caller_state IS 'The caller''s state, as the vendor located it.';
COMMENT ON COLUMN calls.recording_url IS 'Where the vendor serves the MP3 (credentials redacted). The file itself: recordings.path.';
COMMENT ON COLUMN calls.transcript_url IS 'Where the vendor serves the transcript. Its text: transcript_segments, call_transcripts.';
COMMENT ON COLUMN calls.sentiment IS 'positive | neutral | negative, from the vendor''s AI; may appear after the call.';
COMMENT ON COLUMN calls.started_at IS 'When the call started (UTC instant). Days and hours in the views are UTC.';
COMMENT ON COLUMN calls.extra IS 'JSON of the fields the API sent that its reference does not list; NULL if none.';
COMMENT ON COLUMN calls.first_synced_at IS 'When callsync first stored the call.';
COMMENT ON COLUMN calls.last_synced_at IS 'When a listing last included the call.';
COMMENT ON COLUMN calls.last_changed_at IS 'When callsync last stored a change to one of its fields.';

COMMENT ON TABLE tracking_numbers IS 'One row per tracking number of the account, refreshed by every sync and backfill; deleted_at is set when it disappears upstream.';
COMMENT ON COLUMN tracking_numbers.id IS 'The number''s id at the vendor; unique.';
COMMENT ON COLUMN tracking_numbers.phone_number IS 'The number, E.164 (what calls.tracking_number holds).';
COMMENT ON COLUMN tracking_numbers.display_name IS 'The name given to the number, e.g. "Google Ads Pool - 1".';
COMMENT ON COLUMN tracking_numbers.type IS 'local | toll_free | vanity.';
COMMENT ON COLUMN tracking_numbers.status IS 'As the vendor reports it, e.g. active.';
COMMENT ON COLUMN tracking_numbers.call_flow_id IS 'The call flow that answers it (call_flows.id).';
COMMENT ON COLUMN tracking_numbers.recording_enabled IS 'Whether its calls are recorded.';
COMMENT ON COLUMN tracking_numbers.created_at IS 'When the number was created at the vendor.';
COMMENT ON COLUMN tracking_numbers.extra IS 'JSON of the fields the API sent that its reference does not list; NULL if none.';
COMMENT ON COLUMN tracking_numbers.first_synced_at IS 'When callsync first stored the number.';
COMMENT ON COLUMN tracking_numbers.last_synced_at IS 'When a listing last included the number.';
COMMENT ON COLUMN tracking_numbers.deleted_at IS 'When a listing first lacked the number; NULL while it exists.';

COMMENT ON TABLE call_flows IS 'One row per call flow (IVR, forwarding, voicemail) of the account, refreshed by every sync and backfill.';
COMMENT ON COLUMN call_flows.id IS 'The flow''s id at the vendor; unique.';
COMMENT ON COLUMN call_flows.name IS 'The flow''s name.';
COMMENT ON COLUMN call_flows.created_at IS 'When the flow was created.';
COMMENT ON COLUMN call_flows.updated_at IS 'When the flow was last changed at the vendor.';
COMMENT ON COLUMN call_flows.raw IS 'The flow as the API sent it, JSON (its steps; the shape is undocumented).';
COMMENT ON COLUMN call_flows.first_synced_at IS 'When callsync first stored the flow.';
COMMENT ON COLUMN call_flows.last_synced_at IS 'When a listing last included the flow.';
COMMENT ON COLUMN call_flows.deleted_at IS 'When a listing first lacked the flow; NULL while it exists.';

COMMENT ON TABLE recordings IS 'One row per recording downloaded and verified: the MP3 is in the media folder at path.';
COMMENT ON COLUMN recordings.call_id IS 'The call (calls.id); unique.';
COMMENT ON COLUMN recordings.path IS 'The file, relative to [media] dir, with forward slashes.';
COMMENT ON COLUMN recordings.size_bytes IS 'The file''s size in bytes.';
COMMENT ON COLUMN recordings.sha256 IS 'SHA-256 of the file, hex.';
COMMENT ON COLUMN recordings.content_type IS 'The Content-Type the download was served with.';
COMMENT ON COLUMN recordings.fetched_at IS 'When the file was downloaded.';

COMMENT ON TABLE transcript_segments IS 'One row per segment of a call''s AI transcript; call_transcripts has each transcript as one text.';
COMMENT ON COLUMN transcript_segments.call_id IS 'The call (calls.id).';
COMMENT ON COLUMN transcript_segments.segment_index IS 'The segment''s place in the transcript, from 0; unique per call.';
COMMENT ON COLUMN transcript_segments.speaker IS 'Who speaks, as the vendor labels them (e.g. agent, caller).';
COMMENT ON COLUMN transcript_segments.text IS 'What was said.';
COMMENT ON COLUMN transcript_segments."timestamp" IS 'Seconds from the start of the call.';

COMMENT ON TABLE media_jobs IS 'One row per (call, recording or transcript) to fetch: pending (not fetched or not ready yet), done, failed (retried later, with back-off) or unavailable (no longer asked for).';
COMMENT ON COLUMN media_jobs.call_id IS 'The call (calls.id).';
COMMENT ON COLUMN media_jobs.kind IS 'recording | transcript; (call_id, kind) is unique.';
COMMENT ON COLUMN media_jobs.url IS 'The call''s recording_url or transcript_url when last planned.';
COMMENT ON COLUMN media_jobs.status IS 'pending | done | failed | unavailable.';
COMMENT ON COLUMN media_jobs.attempts IS 'Requests made for this job, over all runs.';
COMMENT ON COLUMN media_jobs.failures IS 'Failed attempts in a row (they set the back-off).';
COMMENT ON COLUMN media_jobs.last_error IS 'What the last failed attempt said.';
COMMENT ON COLUMN media_jobs.first_seen_at IS 'When a run first planned the job.';
COMMENT ON COLUMN media_jobs.missing_since IS 'First "not ready yet" (404) of the current streak; NULL if none.';
COMMENT ON COLUMN media_jobs.last_attempt_at IS 'When it was last asked for.';
COMMENT ON COLUMN media_jobs.next_attempt_at IS 'Not asked again before this; NULL means on the next run.';
COMMENT ON COLUMN media_jobs.done_at IS 'When it was stored (status done).';
COMMENT ON COLUMN media_jobs.misses IS 'Length of the current streak of "not ready yet" (404) answers.';

COMMENT ON TABLE rejected_records IS 'One row per record the API sent that failed validation, with its raw payload: nothing is dropped silently.';
COMMENT ON COLUMN rejected_records.rejected_id IS 'Unique, in the order they were rejected.';
COMMENT ON COLUMN rejected_records.run_id IS 'The run that received it (runs.run_id).';
COMMENT ON COLUMN rejected_records.entity IS 'call | tracking_number | call_flow.';
COMMENT ON COLUMN rejected_records.record_id IS 'Its id, if it had a readable one.';
COMMENT ON COLUMN rejected_records.window_start IS 'First day of the listing window it came in (calls only).';
COMMENT ON COLUMN rejected_records.window_end IS 'Last day of that window.';
COMMENT ON COLUMN rejected_records.error IS 'Why it failed validation.';
COMMENT ON COLUMN rejected_records.raw IS 'The record as the API sent it, JSON.';
COMMENT ON COLUMN rejected_records.rejected_at IS 'When it was rejected.';

COMMENT ON TABLE deleted_calls IS 'Calls a complete listing of their days no longer had: moved out of calls (columns as in calls), back if listed again.';
COMMENT ON COLUMN deleted_calls.id IS 'The call''s id at the vendor; unique.';
COMMENT ON COLUMN deleted_calls.tracking_number IS 'As calls.tracking_number.';
COMMENT ON COLUMN deleted_calls.caller_number IS 'As calls.caller_number.';
COMMENT ON COLUMN deleted_calls.duration_seconds IS 'As calls.duration_seconds.';
COMMENT ON COLUMN deleted_calls.outcome IS 'As calls.outcome.';
COMMENT ON COLUMN deleted_calls.campaign_id IS 'As calls.campaign_id.';
COMMENT ON COLUMN deleted_calls.affiliate_id IS 'As calls.affiliate_id.';
COMMENT ON COLUMN deleted_calls.source IS 'As calls.source.';
COMMENT ON COLUMN deleted_calls.caller_city IS 'As calls.caller_city.';
COMMENT ON COLUMN deleted_calls.caller_state IS 'As calls.caller_state.';
COMMENT ON COLUMN deleted_calls.recording_url IS 'As calls.recording_url.';
COMMENT ON COLUMN deleted_calls.transcript_url IS 'As calls.transcript_url.';
COMMENT ON COLUMN deleted_calls.sentiment IS 'As calls.sentiment.';
COMMENT ON COLUMN deleted_calls.started_at IS 'As calls.started_at.';
COMMENT ON COLUMN deleted_calls.extra IS 'As calls.extra.';
COMMENT ON COLUMN deleted_calls.first_synced_at IS 'As calls.first_synced_at.';
COMMENT ON COLUMN deleted_calls.last_synced_at IS 'As calls.last_synced_at.';
COMMENT ON COLUMN deleted_calls.last_changed_at IS 'As calls.last_changed_at.';
COMMENT ON COLUMN deleted_calls.deleted_at IS 'When a complete listing of its window no longer had it.';
COMMENT ON COLUMN deleted_calls.deleted_run_id IS 'The run that found it gone (runs.run_id).';
COMMENT ON COLUMN deleted_calls.media_removed IS 'Whether its recording and transcript were removed ([media] on_upstream_delete).';

COMMENT ON TABLE tombstones IS 'A call or caller erased with `callsync forget`, never loaded again: a salted hash, never the id or the number.';
COMMENT ON COLUMN tombstones.hash IS 'sha256(salt || value), hex; value is the call id or the caller number''s digits.';
COMMENT ON COLUMN tombstones.kind IS 'call_id | caller_number.';
COMMENT ON COLUMN tombstones.created_at IS 'When it was erased.';
COMMENT ON COLUMN tombstones.run_id IS 'The `forget` run (runs.run_id).';

COMMENT ON TABLE forget_audit IS 'One row per erasure or deletion: what kind, how many calls, rows and files, which run. Never the ids or numbers.';
COMMENT ON COLUMN forget_audit.audit_id IS 'Unique, in order.';
COMMENT ON COLUMN forget_audit.happened_at IS 'When it happened.';
COMMENT ON COLUMN forget_audit.kind IS 'upstream_delete | upstream_restore | upstream_delete_media | media_retention | call_retention | forget.';
COMMENT ON COLUMN forget_audit.run_id IS 'The run (runs.run_id).';
COMMENT ON COLUMN forget_audit.calls IS 'Calls it concerned.';
COMMENT ON COLUMN forget_audit."rows" IS 'Rows removed or moved, all tables together.';
COMMENT ON COLUMN forget_audit.files IS 'Recording files removed.';
COMMENT ON COLUMN forget_audit.detail IS 'Rows per table, JSON.';

COMMENT ON TABLE files_to_remove IS 'Recording files whose rows are gone, until they are removed from the media folder (the next run finishes what a crash left).';
COMMENT ON COLUMN files_to_remove.path IS 'The file, relative to [media] dir, as recordings.path was.';
COMMENT ON COLUMN files_to_remove.queued_at IS 'When its rows were removed.';

COMMENT ON TABLE runs IS 'One row per run of sync, backfill, media, verify or forget: its status and counts. `callsync status` shows the recent ones.';
COMMENT ON COLUMN runs.run_id IS 'Unique; also in the run''s log lines and summary.';
COMMENT ON COLUMN runs.command IS 'sync | backfill | media | verify | verify --dry-run | forget.';
COMMENT ON COLUMN runs.args IS 'The run''s options, JSON.';
COMMENT ON COLUMN runs.started_at IS 'When it started.';
COMMENT ON COLUMN runs.finished_at IS 'When it ended; NULL while running (or if its process died).';
COMMENT ON COLUMN runs.status IS 'running | ok | failed | paused (request budget) | aborted | interrupted.';
COMMENT ON COLUMN runs.windows_done IS 'Listing windows committed.';
COMMENT ON COLUMN runs.windows_skipped IS 'Windows an earlier run had committed.';
COMMENT ON COLUMN runs.windows_failed IS 'Windows that failed after all retries (asked again by the next run).';
COMMENT ON COLUMN runs.calls_new IS 'Calls stored for the first time.';
COMMENT ON COLUMN runs.calls_updated IS 'Calls whose fields changed.';
COMMENT ON COLUMN runs.calls_unchanged IS 'Calls listed again without a change.';
COMMENT ON COLUMN runs.rejected IS 'Records that failed validation (rejected_records).';
COMMENT ON COLUMN runs.refetches IS 'Windows read again because their data moved while paging.';
COMMENT ON COLUMN runs.requests IS 'HTTP requests made.';
COMMENT ON COLUMN runs.retries IS 'Requests retried after an error.';
COMMENT ON COLUMN runs.rate_limited IS 'Requests answered 429.';
COMMENT ON COLUMN runs.summary IS 'All of the run''s figures, JSON: media, deletions, failures, elapsed_s (its `--summary-format json` fields).';
COMMENT ON COLUMN runs.error IS 'Why it stopped, one line; NULL if it did not.';

COMMENT ON TABLE sync_windows IS 'One row per committed listing window: its days, committed with its calls in one transaction. A backfill run again skips these days.';
COMMENT ON COLUMN sync_windows.scope IS 'Empty for an unfiltered window, else the backfill''s filters (e.g. outcome=qualified).';
COMMENT ON COLUMN sync_windows.window_start IS 'First day (UTC).';
COMMENT ON COLUMN sync_windows.window_end IS 'Last day (UTC), inclusive.';
COMMENT ON COLUMN sync_windows.row_count IS 'Calls the window held.';
COMMENT ON COLUMN sync_windows.run_id IS 'The run that committed it (runs.run_id).';
COMMENT ON COLUMN sync_windows.synced_at IS 'When it was committed.';

COMMENT ON TABLE sync_state IS 'Named values callsync keeps between runs, e.g. watermark (the last fully synced day).';
COMMENT ON COLUMN sync_state.key IS 'The name; unique.';
COMMENT ON COLUMN sync_state.value IS 'The value, as text.';
COMMENT ON COLUMN sync_state.updated_at IS 'When it was last set.';

COMMENT ON TABLE schema_migrations IS 'One row per migration from sql/migrations/ applied to this database.';
COMMENT ON COLUMN schema_migrations.name IS 'The migration, e.g. 001_core.';
COMMENT ON COLUMN schema_migrations.applied_at IS 'When it was applied.';

COMMENT ON VIEW calls_enriched IS 'Each call with its tracking number (number_id, number_name, number_type, matched on phone_number) and that number''s flow (flow_id, flow_name); call_date and call_hour are UTC, is_qualified is outcome = qualified.';
COMMENT ON VIEW daily_calls IS 'One row per UTC day (call_date): calls, then per outcome (other: none of the four), qualified_rate (0-1) and avg_duration_s.';
COMMENT ON VIEW call_media IS 'Each call: whether a recording and a transcript are expected (the API gave a URL) and fetched, their job status (NULL until a media run saw the call), recording_bytes and transcript_segments.';
COMMENT ON VIEW call_transcripts IS 'Each call with a transcript: its segments and full_text (one line per segment, "speaker: text"), for searching.';
