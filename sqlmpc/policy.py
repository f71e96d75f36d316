"""The federation's policy: k, allowed joins, dominance, analysts, perturbation, approved plans.

A ``[policy]`` table of the federation file (shared by all parties), optionally made
stricter by a party's local policy file (never looser).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlmpc.plan.perturbation import CellKeyPolicy, validate as validate_cell_key
from sqlmpc.tomlfile import Node, read_toml

@dataclass(frozen=True)
class Dominance:
    """A dominance rule on the persons' contributions to a sum.

    ``kind = "n-largest"``: (n, p) rule, a cell is suppressed if its n largest contributions
    make up more than p % of its sum.  ``kind = "p-percent"``: p % rule, suppressed if the sum
    less the two largest contributions is below p % of the largest (the second largest
    contributor could estimate the largest too closely).
    """

    n: int
    percent: float
    kind: str = "n-largest"


@dataclass(frozen=True)
class Policy:
    min_cell_size: int = 10
    joins: frozenset[frozenset[str]] | None = None   # allowed party pairs; None = every pair
    dominance: Dominance | None = None
    analysts: frozenset[str] | None = None           # who may ask; None = anyone authenticated
    perturbation: str = "none"                       # "cell_key" (docs/disclosure.md) or "none": exact release
    cell_key: CellKeyPolicy = field(default_factory=CellKeyPolicy)
    approved_plans: frozenset[str] = frozenset()     # plan hashes released exactly (all release rules apply)

    def may_join(self, a: str, b: str) -> bool:
        return a == b or self.joins is None or frozenset((a, b)) in self.joins


_POLICY_KEYS = ("min_cell_size", "joins", "dominance", "analysts", "perturbation", "cell_key", "approved_plans")
PERTURBATIONS = ("cell_key", "none")
_PLAN_HASH = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class PolicyDraft:
    """The keys a [policy] table sets; None = not given (so a local policy can leave it)."""

    min_cell_size: int | None
    joins: frozenset[frozenset[str]] | None
    dominance: Dominance | None
    analysts: frozenset[str] | None
    perturbation: str | None = None
    cell_key: CellKeyPolicy | None = None
    approved_plans: frozenset[str] | None = None


def policy_draft(node: Node, party_names: tuple[str, ...]) -> PolicyDraft:
    node.allow(_POLICY_KEYS)
    k = node.get("min_cell_size", int, "an integer")
    if k is not None and k < 1:
        raise node.error(f"'min_cell_size' must be at least 1, not {k}", "min_cell_size")
    joins = None
    if node.has("joins"):
        pairs = node.get("joins", list, 'a list of party pairs, e.g. [["hospital", "insurer"]]')
        joins = frozenset(join_pair(node, pair, party_names) for pair in pairs)
    dominance = None
    if node.has("dominance"):
        dom = node.child("dominance")
        dom.allow(("rule", "n", "percent"))
        kind = dom.get("rule", str, '"n-largest" or "p-percent"') or "n-largest"
        if kind not in ("n-largest", "p-percent"):
            raise dom.error(f"'rule' must be \"n-largest\" or \"p-percent\", not {kind!r}", "rule")
        n = dom.require("n", int, "the number of largest contributors") if kind == "n-largest" else 2
        percent = float(dom.require("percent", (int, float), "a percentage"))
        if n < 1:
            raise dom.error(f"'n' must be at least 1, not {n}", "n")
        if not 0 < percent <= 100:
            raise dom.error(f"'percent' must be in (0, 100], not {percent}", "percent")
        dominance = Dominance(n, percent, kind)
    analysts = None
    if node.has("analysts"):
        names = node.get("analysts", list, "a list of analyst names")
        if not all(isinstance(a, str) and a for a in names):
            raise node.error("'analysts' must be a list of non-empty names", "analysts")
        analysts = frozenset(names)
    perturbation = node.get("perturbation", str, '"cell_key" or "none"')
    if perturbation is not None and perturbation not in PERTURBATIONS:
        close = difflib.get_close_matches(perturbation, PERTURBATIONS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ' (allowed: "cell_key", "none")'
        raise node.error(f"unknown perturbation '{perturbation}'{hint}", "perturbation")
    cell_key = cell_key_policy(node.child("cell_key"), k if k is not None else 10) if node.has("cell_key") else None
    approved = None
    if node.has("approved_plans"):
        hashes = node.get("approved_plans", list, 'a list of plan hashes (as printed by "sqlmpc approve")')
        for h in hashes:
            if not isinstance(h, str) or not _PLAN_HASH.match(h):
                raise node.error(f"approved plan {h!r} is not a plan hash (64 hex digits, as printed by "
                                 "\"sqlmpc approve FILE.sql\")", "approved_plans")
        approved = frozenset(hashes)
    return PolicyDraft(k, joins, dominance, analysts, perturbation, cell_key, approved)


def cell_key_policy(node: Node, min_cell_size: int) -> CellKeyPolicy:
    """[policy.cell_key]: the perturbation table's parameters (defaults in CellKeyPolicy)."""
    node.allow(("max_deviation", "variance", "min_released_count", "magnitude_deviation"))
    base = CellKeyPolicy()
    policy = CellKeyPolicy(
        max_deviation=node.get("max_deviation", int, "an integer", default=base.max_deviation),
        variance=float(node.get("variance", (int, float), "a number", default=base.variance)),
        min_released_count=node.get("min_released_count", int, "an integer", default=base.min_released_count),
        magnitude_deviation=float(node.get("magnitude_deviation", (int, float), "a number",
                                           default=base.magnitude_deviation)))
    problem = validate_cell_key(policy, min_cell_size)
    if problem:
        raise node.error(f"cell_key: {problem}", problem.split()[0])
    return policy


def join_pair(node: Node, pair: object, party_names: tuple[str, ...]) -> frozenset[str]:
    if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
        raise node.error(f"each join must be a pair of party names, found {pair!r}", "joins")
    for name in pair:
        if name not in party_names:
            close = difflib.get_close_matches(name, party_names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (parties: {', '.join(party_names)})"
            raise node.error(f"join names unknown party '{name}'{hint}", "joins")
    if pair[0] == pair[1]:
        raise node.error(f"a join pair needs two different parties, found {pair!r}", "joins")
    return frozenset(pair)


def policy_of(draft: PolicyDraft) -> Policy:
    return Policy(min_cell_size=draft.min_cell_size if draft.min_cell_size is not None else 10,
                  joins=draft.joins, dominance=draft.dominance, analysts=draft.analysts,
                  perturbation=draft.perturbation or "none", cell_key=draft.cell_key or CellKeyPolicy(),
                  approved_plans=draft.approved_plans or frozenset())


def stricter(policy: Policy, local: PolicyDraft, node: Node) -> Policy:
    """Merge a party's local policy, refusing anything looser than the federation's."""
    merged = policy
    if local.min_cell_size is not None:
        if local.min_cell_size < policy.min_cell_size:
            raise node.error(f"a local policy may only be stricter: min_cell_size {local.min_cell_size} is below "
                             f"the federation's {policy.min_cell_size}", "min_cell_size")
        merged = replace(merged, min_cell_size=local.min_cell_size)
    if local.joins is not None:
        if policy.joins is not None and not local.joins <= policy.joins:
            extra = sorted("-".join(sorted(p)) for p in local.joins - policy.joins)
            raise node.error(f"a local policy may only be stricter: joins {', '.join(extra)} are not allowed by "
                             "the federation", "joins")
        merged = replace(merged, joins=local.joins)
    if local.dominance is not None:
        fed = policy.dominance
        loc = local.dominance
        if fed is not None and loc.kind != fed.kind:
            raise node.error(f"a local policy may only tighten the federation's dominance rule "
                             f"({fed.kind}), not replace it with a {loc.kind} rule", "dominance")
        looser = (loc.percent < fed.percent if loc.kind == "p-percent"
                  else loc.n < fed.n or loc.percent > fed.percent) if fed is not None else False
        if looser:
            raise node.error(f"a local policy may only be stricter: dominance (n = {local.dominance.n}, "
                             f"percent = {local.dominance.percent}) is looser than the federation's (n = {fed.n}, "
                             f"percent = {fed.percent})", "dominance")
        merged = replace(merged, dominance=local.dominance)
    if local.analysts is not None:
        if policy.analysts is not None and not local.analysts <= policy.analysts:
            extra = ", ".join(sorted(local.analysts - policy.analysts))
            raise node.error(f"a local policy may only be stricter: analysts {extra} are not allowed by the "
                             "federation", "analysts")
        merged = replace(merged, analysts=local.analysts)
    if local.perturbation is not None:
        if local.perturbation == "none" and policy.perturbation != "none":
            raise node.error("a local policy may only be stricter: perturbation \"none\" would release exactly "
                             "what the federation perturbs", "perturbation")
        merged = replace(merged, perturbation=local.perturbation)
    if local.cell_key is not None:
        raise node.error("the perturbation table's parameters belong in the federation file (every party "
                         "must use the same table)", "cell_key")
    if local.approved_plans is not None:
        extra = local.approved_plans - policy.approved_plans
        if extra:
            raise node.error(f"a local policy may only be stricter: plans {', '.join(sorted(h[:12] for h in extra))} "
                             "are not approved by the federation", "approved_plans")
        merged = replace(merged, approved_plans=local.approved_plans)
    return merged


def with_local_policy(path: Path, policy: Policy, party_names: tuple[str, ...]) -> Policy:
    data, source = read_toml(path)
    root = Node(source, data, ())
    root.allow(("policy",))
    if not root.has("policy"):
        raise root.error("a local policy file holds one [policy] table", "policy", missing=True)
    node = root.child("policy")
    return stricter(policy, policy_draft(node, party_names), node)
