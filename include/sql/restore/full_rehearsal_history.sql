-- Earlier rehearsals' measured RTOs of a target (the trend the next one is judged against).
SELECT recorded_at, rto_seconds
FROM restore_logs
WHERE kind = 'rehearsal'
  AND target = %(target)s
  AND rto_seconds IS NOT NULL
  AND recorded_at >= %(since)s
ORDER BY recorded_at;
