-- In which age bands do app users stay engaged for more than 20 weeks on
-- average?  HAVING is evaluated securely; only passing cells are shown.
SELECT b.age_band,
       COUNT(*) AS users,
       AVG(u.active_weeks) AS avg_active_weeks
FROM hospital.app_usage u
JOIN bureau.persons b ON b.pid = u.pid
GROUP BY b.age_band
HAVING AVG(u.active_weeks) > 20
ORDER BY avg_active_weeks DESC;
