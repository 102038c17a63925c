-- The successful PITR drills of one target since a moment, oldest first: the points of the RTO trend.
SELECT recorded_at, total_seconds
FROM pitr_recoveries
WHERE kind = 'drill'
  AND target = %(target)s
  AND status = 'SUCCESS'
  AND total_seconds IS NOT NULL
  AND recorded_at >= %(since)s
ORDER BY recorded_at;
