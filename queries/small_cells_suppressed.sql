-- Heart-failure patients per age band and region: a breakdown in which
-- several cells describe fewer than k persons and are suppressed.
SELECT b.age_band,
       b.region,
       COUNT(DISTINCT p.pid) AS patients
FROM hospital.patients p
JOIN bureau.persons b ON b.pid = p.pid
WHERE p.diagnosis = 'HF'
GROUP BY b.age_band, b.region
ORDER BY b.age_band, b.region;
