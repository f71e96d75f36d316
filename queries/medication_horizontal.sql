-- How many persons received each class of medication in 2024, counting both
-- in-hospital dispensing and pharmacy claims (the same table at two parties)?
-- horizontal: hospital.medication UNION ALL insurer.pharmacy
SELECT m.drug_class,
       COUNT(DISTINCT m.pid) AS persons,
       SUM(m.ddd) AS defined_daily_doses
FROM (SELECT pid, year, drug_class, ddd FROM hospital.medication
      UNION ALL
      SELECT pid, year, drug_class, ddd FROM insurer.pharmacy) AS m
WHERE m.year = 2024
GROUP BY m.drug_class
ORDER BY m.drug_class;
