-- Earlier successful drills of a target: the points of the RTO trend.
SELECT drill_date, total_seconds
FROM restore_drills
WHERE target = %(target)s AND status = 'SUCCESS' AND drill_date >= %(since)s AND total_seconds IS NOT NULL
ORDER BY drill_date;
