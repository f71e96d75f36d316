-- Heart-failure patients per age band and income decile: a fine breakdown
-- in which many cells describe fewer than k persons and are suppressed.
SELECT b.age_band,
       b.income_decile,
       COUNT(DISTINCT p.pid) AS patients
FROM hospital.patients p
JOIN bureau.persons b ON b.pid = p.pid
WHERE p.diagnosis = 'HF'
GROUP BY b.age_band, b.income_decile
ORDER BY b.age_band, b.income_decile;
