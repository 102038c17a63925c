-- SUCCESS backups in (since, now], each with the median size of up to %(window)s previous SUCCESS
-- backups of the same target and tier (n_previous tells the caller whether there are enough).
SELECT b.id,
       b.target,
       b.backup_type,
       b.backup_date,
       b.file_name,
       b.file_size_bytes,
       b.s3_uploaded,
       b.verified,
       prev.n_previous,
       prev.median_bytes
FROM backup_logs b
CROSS JOIN LATERAL (
    SELECT count(*) AS n_previous,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY p.file_size_bytes) AS median_bytes
    FROM (
        SELECT p.file_size_bytes
        FROM backup_logs p
        WHERE p.target = b.target
          AND p.backup_type = b.backup_type
          AND p.status = 'SUCCESS'
          AND p.file_size_bytes IS NOT NULL
          AND p.backup_date < b.backup_date
        ORDER BY p.backup_date DESC
        LIMIT %(window)s
    ) p
) prev
WHERE b.status = 'SUCCESS'
  AND b.backup_date > %(since)s
  AND b.backup_date <= %(now)s
  AND b.target = ANY(%(targets)s::text[])
ORDER BY b.target, b.backup_date, b.id;
