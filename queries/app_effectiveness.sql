-- Do IBD patients who use the hospital's coaching app have lower insurance
-- costs in 2024 than those who do not, and in which age bands?
-- hospital (patients, app use) ⋈ insurer (claims) ⋈ bureau (age band)
SELECT b.age_band,
       CASE WHEN u.pid IS NULL THEN 'no app' ELSE 'app' END AS app_use,
       COUNT(DISTINCT p.pid) AS patients,
       SUM(c.cost_eur) AS total_cost_eur,
       AVG(c.cost_eur) AS avg_claim_eur
FROM hospital.patients p
LEFT JOIN hospital.app_usage u ON u.pid = p.pid
JOIN insurer.claims c ON c.pid = p.pid
JOIN bureau.persons b ON b.pid = p.pid
WHERE p.diagnosis = 'IBD' AND c.year = 2024
GROUP BY b.age_band, app_use
ORDER BY b.age_band, app_use;
