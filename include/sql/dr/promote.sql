-- Ends recovery; with wait, returns once the server accepts writes (false: not within wait_seconds).
SELECT pg_promote(true, %(wait_seconds)s) AS promoted
