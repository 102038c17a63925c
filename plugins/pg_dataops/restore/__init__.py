"""The restore side: full recovery and its monthly rehearsal, one table, one user's data (runbook 1.2, 3.1, 3.2)."""
