-- A check session when the checks already run on several connections: no parallel workers on top
-- (they would only contend for the same CPUs).
SET max_parallel_workers_per_gather = 0;
