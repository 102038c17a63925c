-- Statistics for the whole recovered database: a restore leaves none, and the planner would guess.
ANALYZE;
