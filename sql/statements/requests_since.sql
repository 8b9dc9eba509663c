-- Requests sent by runs that finished at or after $since. All of such a run's requests
-- count, also those it sent earlier: the cautious reading of an hourly quota. A run
-- killed before it finished recorded none.
SELECT coalesce(sum(requests), 0) FROM runs WHERE finished_at >= $since;
