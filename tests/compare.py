"""Comparing a secure result with the plaintext oracle's: the one rule every test uses."""

from __future__ import annotations

import math

REL_TOL = 1e-9   # exact ratios released as doubles vs DuckDB's double arithmetic


def same(a, b, rel_tol: float = REL_TOL) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(float(a)) or math.isnan(float(b)):
            return math.isnan(float(a)) and math.isnan(float(b))
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=rel_tol)
    return a == b


def assert_same_result(secure, oracle, context: str = "", rel_tol: float = REL_TOL) -> None:
    """Same columns, same suppression, same rows in the same order (numbers within ``rel_tol``)."""
    assert secure.columns == oracle.columns, context
    assert secure.suppressed == oracle.suppressed, context
    assert len(secure.rows()) == len(oracle.rows()), context
    for got, want in zip(secure.rows(), oracle.rows()):
        assert all(same(a, b, rel_tol) for a, b in zip(got, want)), (context, got, want)
