-- IBD patients' claims in 2023 versus 2024, by app use (FILTER clauses).
SELECT CASE WHEN u.pid IS NULL THEN 'no app' ELSE 'app' END AS app_use,
       COUNT(DISTINCT p.pid) AS patients,
       SUM(c.cost_eur) FILTER (WHERE c.year = 2023) AS cost_2023,
       SUM(c.cost_eur) FILTER (WHERE c.year = 2024) AS cost_2024
FROM hospital.patients p
LEFT JOIN hospital.app_usage u ON u.pid = p.pid
JOIN insurer.claims c ON c.pid = p.pid
WHERE p.diagnosis = 'IBD' AND c.year BETWEEN 2023 AND 2024
GROUP BY app_use
ORDER BY app_use;
