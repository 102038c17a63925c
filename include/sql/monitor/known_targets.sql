-- Targets the catalog knows, for a monitor run without a configured target list.
SELECT DISTINCT target FROM backup_logs ORDER BY target;
