-- How are claim costs spread per category and year? (the insurer alone; the
-- same disclosure control applies to a single party's query)
SELECT c.category,
       c.year,
       COUNT(*) AS claims,
       SUM(c.cost_eur) AS cost_eur,
       VAR_POP(c.cost_eur) AS var_cost,
       COUNT(*) FILTER (WHERE c.cost_eur > 1000) AS claims_over_1000_eur
FROM insurer.claims c
WHERE c.year >= 2023
GROUP BY c.category, c.year
ORDER BY c.category, c.year;
