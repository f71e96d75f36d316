-- Is there an income gradient in 2024 health-insurance costs?
-- insurer (claims) ⋈ bureau (income decile)
SELECT b.income_decile,
       COUNT(DISTINCT c.pid) AS insured,
       AVG(c.cost_eur) AS avg_claim_eur,
       STDDEV_SAMP(c.cost_eur) AS sd_claim_eur
FROM insurer.claims c
JOIN bureau.persons b ON b.pid = c.pid
WHERE c.year = 2024
GROUP BY b.income_decile
ORDER BY b.income_decile;
