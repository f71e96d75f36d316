-- What do the insurer's 2024 claims cost per hospital diagnosis and region?
-- hospital (diagnosis) ⋈ insurer (claims) ⋈ bureau (region)
SELECT p.diagnosis,
       b.region,
       COUNT(DISTINCT p.pid) AS patients,
       SUM(c.cost_eur) AS cost_eur,
       AVG(c.cost_eur) AS avg_claim_eur
FROM hospital.patients p
JOIN insurer.claims c ON c.pid = p.pid
JOIN bureau.persons b ON b.pid = p.pid
WHERE c.year = 2024
GROUP BY p.diagnosis, b.region
ORDER BY p.diagnosis, b.region;
