-- Sentiment mix by outcome: calls and the share of each sentiment.
SELECT
    outcome,
    count(*) AS calls,
    round(count(*) FILTER (WHERE sentiment = 'positive') / count(*), 3) AS positive,
    round(count(*) FILTER (WHERE sentiment = 'neutral') / count(*), 3) AS neutral,
    round(count(*) FILTER (WHERE sentiment = 'negative') / count(*), 3) AS negative,
    round(count(*) FILTER (WHERE sentiment IS NULL) / count(*), 3) AS no_sentiment
FROM calls
GROUP BY outcome
ORDER BY calls DESC, outcome
