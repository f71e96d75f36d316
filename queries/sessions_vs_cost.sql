-- Among app users, do more coaching sessions go with lower 2024 claim costs?
-- A correlation between a hospital measure and an insurer measure.
SELECT COUNT(*) AS claims,
       CORR(u.sessions, c.cost_eur) AS corr_sessions_cost,
       REGR_SLOPE(c.cost_eur, u.sessions) AS eur_per_session,
       REGR_INTERCEPT(c.cost_eur, u.sessions) AS eur_at_zero_sessions
FROM hospital.app_usage u
JOIN insurer.claims c ON c.pid = u.pid
WHERE c.year = 2024;
