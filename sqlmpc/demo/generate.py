"""Deterministic synthetic demo federations (hospital, insurer, bureau; or N hospitals).

Everything is drawn with numpy from generators seeded by (seed, stream), one
stream per table, and written with pyarrow: the same seed gives the same
bytes.  The data carry a real signal for the demo queries: IBD patients who
use the hospital's coaching app have ~15-25 % lower insurer costs in the
years after their diagnosis, more so in low income deciles and old age
bands, and more coaching sessions go with lower costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sqlmpc import errors
from sqlmpc.catalog import Column, Dominance, Party, Role, Table, load_federation
from sqlmpc.cli.approve import approvals
from sqlmpc.demo.toml_writer import federation_toml

DEMO_VERSION = 5      # bump when the generated data or federation file change (names the cache directory)
SAVED_QUERIES = Path(__file__).resolve().parents[2] / "queries"   # approved in the demo (source tree)

AGE_BANDS = ("0-17", "18-34", "35-49", "50-64", "65-79", "80+")
AGE_SHARE = (0.19, 0.21, 0.19, 0.20, 0.15, 0.06)
REGIONS = ("North", "East", "South", "West")
REGION_SHARE = (0.20, 0.25, 0.30, 0.25)
DIAGNOSES = ("IBD", "HF", "DM2", "COPD", "CKD")
# P(diagnosis | age band) for hospital patients: IBD is a disease of the young, HF of the old.
DIAGNOSIS_BY_AGE = np.array([
    [0.60, 0.02, 0.20, 0.13, 0.05],
    [0.50, 0.05, 0.20, 0.15, 0.10],
    [0.35, 0.12, 0.25, 0.15, 0.13],
    [0.20, 0.22, 0.28, 0.15, 0.15],
    [0.12, 0.30, 0.25, 0.18, 0.15],
    [0.08, 0.38, 0.22, 0.17, 0.15],
])
PATIENT_SHARE_BY_AGE = np.array([0.10, 0.18, 0.25, 0.35, 0.50, 0.60])   # ~30 % of everyone
DIAGNOSIS_YEARS = (2015, 2024)
YEARS = (2020, 2025)
CATEGORIES = ("hospital", "gp", "pharmacy", "mental_health", "other")
CATEGORY_SHARE = np.array([0.15, 0.40, 0.30, 0.07, 0.08])
CATEGORY_WEIGHT = np.array([4.0, 0.5, 0.8, 1.5, 0.6]) / float(np.dot([0.15, 0.40, 0.30, 0.07, 0.08],
                                                                      [4.0, 0.5, 0.8, 1.5, 0.6]))
DRUG_CLASSES = ("aminosalicylate", "biologic", "corticosteroid", "anticoagulant", "antidiabetic", "bronchodilator")
# The drug classes a diagnosis is treated with (indices into DRUG_CLASSES).
DRUGS_OF_DIAGNOSIS = {0: (0, 1, 2), 1: (3,), 2: (4,), 3: (5, 2), 4: (3, 4)}
BASE_ANNUAL_COST_BY_AGE = np.array([600.0, 900.0, 1400.0, 2200.0, 3800.0, 5500.0])
DIAGNOSIS_COST_FACTOR = np.array([2.2, 3.0, 1.8, 2.2, 2.6])
APP_SHARE_OF_IBD = 0.40
COST_MAX = 250_000.0
DDD_MAX = 2000.0
WARDS = ("cardiology", "surgery", "internal_medicine", "neurology", "oncology", "paediatrics")
ADMISSION_COST_MAX = 1_000_000.0
# At most this many claims, and dispensings, per person and year: the catalog declares the
# product with the years as the tables' max_rows (it sizes the secure fields); the yearly
# rates are a few, so the cap never binds in practice.
ROWS_PER_YEAR_MAX = 40
ROWS_PER_PERSON = ROWS_PER_YEAR_MAX * (YEARS[1] - YEARS[0] + 1)


# -- small vectorised helpers ----------------------------------------------------

def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _pseudonyms(rng: np.random.Generator, n: int, prefix: str = "p") -> pa.Array:
    """n distinct strings prefix + 10 hex digits: an affine permutation of 2^40 with seeded constants."""
    multiplier = int(rng.integers(1, 2**39)) * 2 + 1          # odd: a bijection modulo 2^40
    offset = int(rng.integers(0, 2**40))
    codes = (np.arange(n, dtype=np.uint64) * np.uint64(multiplier) + np.uint64(offset)) & np.uint64(2**40 - 1)
    shifts = np.arange(36, -1, -4, dtype=np.uint64)
    nibbles = ((codes[:, None] >> shifts) & np.uint64(15)).astype(np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    width = len(prefix) + 10
    chars = np.empty((n, width), dtype=np.uint8)
    chars[:, :len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    chars[:, len(prefix):] = digits
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _categorical(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One draw per row of a (rows × k) matrix of probabilities."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(probabilities.shape[0])
    return np.minimum((u[:, None] > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _choice(rng: np.random.Generator, n: int, probabilities) -> np.ndarray:
    """n draws from one vector of probabilities."""
    probabilities = np.asarray(probabilities, dtype=float)
    return np.minimum(np.searchsorted(np.cumsum(probabilities), rng.random(n), side="right"),
                      len(probabilities) - 1)


def _labels(codes: np.ndarray, domain: tuple[str, ...]) -> pa.Array:
    """Dimension values as strings (dictionary-encoded: DuckDB reads them as VARCHAR)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(domain)))


def _cents(values: np.ndarray, hi: float) -> np.ndarray:
    return np.round(np.clip(values, 0.0, hi), 2)


@dataclass(frozen=True)
class _Persons:
    """Everyone the bureau knows; the other tables index into these arrays."""

    pid: pa.Array
    age: np.ndarray          # index into AGE_BANDS
    income: np.ndarray       # decile 1..10
    region: np.ndarray       # index into REGIONS


@dataclass(frozen=True)
class _Patients:
    person: np.ndarray       # index into _Persons
    diagnosis: np.ndarray    # index into DIAGNOSES
    year: np.ndarray         # diagnosis year
    sex: np.ndarray          # 0 = F, 1 = M
    app_user: np.ndarray     # bool, IBD patients only
    engagement: np.ndarray   # 0..1 for app users (drives sessions and the cost effect)


def _persons(seed: int, n: int) -> _Persons:
    rng = _rng(seed, 1)
    return _Persons(pid=_pseudonyms(rng, n), age=_choice(rng, n, AGE_SHARE),
                    income=rng.integers(1, 11, n), region=_choice(rng, n, REGION_SHARE))


def _patients(seed: int, persons: _Persons) -> _Patients:
    rng = _rng(seed, 2)
    n = len(persons.age)
    person = np.flatnonzero(rng.random(n) < PATIENT_SHARE_BY_AGE[persons.age])
    diagnosis = _categorical(rng, DIAGNOSIS_BY_AGE[persons.age[person]])
    year = rng.integers(DIAGNOSIS_YEARS[0], DIAGNOSIS_YEARS[1] + 1, len(person))
    sex = (rng.random(len(person)) < np.where(diagnosis == 0, 0.45, 0.52)).astype(np.int64)
    app_user = (diagnosis == 0) & (rng.random(len(person)) < APP_SHARE_OF_IBD)
    engagement = np.where(app_user, rng.beta(2.0, 3.0, len(person)), 0.0)
    return _Patients(person, diagnosis, year, sex, app_user, engagement)


# -- tables ---------------------------------------------------------------------------

def _persons_table(p: _Persons) -> pa.Table:
    return pa.table({"pid": p.pid, "age_band": _labels(p.age, AGE_BANDS),
                     "income_decile": pa.array(p.income.astype(np.int32)), "region": _labels(p.region, REGIONS)})


def _patients_table(persons: _Persons, pt: _Patients) -> pa.Table:
    return pa.table({"pid": persons.pid.take(pa.array(pt.person)), "diagnosis": _labels(pt.diagnosis, DIAGNOSES),
                     "diagnosis_year": pa.array(pt.year.astype(np.int32)), "sex": _labels(pt.sex, ("F", "M"))})


def _app_usage_table(seed: int, persons: _Persons, pt: _Patients) -> pa.Table:
    rng = _rng(seed, 3)
    users = np.flatnonzero(pt.app_user)
    e = pt.engagement[users]
    sessions = np.clip(np.round(e * 350 + rng.normal(0, 15, len(users))), 0, 500).astype(np.int32)
    weeks = np.clip(np.round(e * 52 + rng.normal(0, 3, len(users))), 0, 52).astype(np.int32)
    return pa.table({"pid": persons.pid.take(pa.array(pt.person[users])), "sessions": sessions,
                     "active_weeks": weeks})


def _person_years(n_persons: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (person, year) pair of the claim years."""
    years = np.arange(YEARS[0], YEARS[1] + 1)
    return np.repeat(np.arange(n_persons), len(years)), np.tile(years, n_persons)


def _expected_annual_cost(seed: int, persons: _Persons, pt: _Patients) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(person, year, expected insurer cost) for every insured person-year, with the app effect built in."""
    rng = _rng(seed, 4)
    n = len(persons.age)
    insured = np.flatnonzero(rng.random(n) < 0.92)
    frailty = rng.lognormal(-0.045, 0.3, n)          # mean 1: some people simply cost more
    person, year = _person_years(len(insured))
    person = insured[person]
    cost = BASE_ANNUAL_COST_BY_AGE[persons.age[person]] * frailty[person]
    cost *= 1.0 + 0.04 * (5.5 - persons.income[person])   # lower income, higher cost
    # Diagnosis: chronic costs from the diagnosis year on, a milder rise before it.
    patient_of = np.full(n, -1)
    patient_of[pt.person] = np.arange(len(pt.person))
    idx = patient_of[person]
    is_patient = idx >= 0
    p = idx[is_patient]
    factor = np.where(year[is_patient] >= pt.year[p], DIAGNOSIS_COST_FACTOR[pt.diagnosis[p]], 1.3)
    # The app: lower costs in the years after diagnosis; stronger for low income, old age, high engagement.
    after = pt.app_user[p] & (year[is_patient] > pt.year[p])
    income, age = persons.income[person[is_patient]], persons.age[person[is_patient]]
    reduction = np.clip((0.08 + 0.015 * (10 - income) + 0.025 * age) * (0.3 + 1.75 * pt.engagement[p]), 0.0, 0.6)
    factor = factor * np.where(after, 1.0 - reduction, 1.0)
    cost[is_patient] *= factor
    cost *= rng.lognormal(-0.045, 0.3, len(cost))    # year-to-year noise, mean 1
    return person, year, cost


def _claims_table(seed: int, persons: _Persons, pt: _Patients) -> pa.Table:
    person, year, expected = _expected_annual_cost(seed, persons, pt)
    rng = _rng(seed, 5)
    # Costlier years have somewhat more claims and somewhat larger ones.
    rate = 1.0 + 0.8 * np.log1p(expected / 1000.0)
    counts = np.minimum(rng.poisson(rate), ROWS_PER_YEAR_MAX)
    row_of = np.repeat(np.arange(len(person)), counts)
    category = _choice(rng, len(row_of), CATEGORY_SHARE)
    per_claim = expected[row_of] / np.maximum(counts[row_of], 1) * CATEGORY_WEIGHT[category]
    cost = _cents(per_claim * rng.lognormal(-0.06, 0.35, len(row_of)), COST_MAX)
    return pa.table({"pid": persons.pid.take(pa.array(person[row_of])),
                     "year": pa.array(year[row_of].astype(np.int32)),
                     "category": _labels(category, CATEGORIES), "cost_eur": cost})


def _drug_rows(rng: np.random.Generator, person: np.ndarray, diagnosis: np.ndarray, rate: np.ndarray,
               mean_ddd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dispensing rows: (person, year, drug class, ddd); patients mostly get their diagnosis' drugs."""
    years = np.arange(YEARS[0], YEARS[1] + 1)
    person_year = np.repeat(np.arange(len(person)), len(years))
    year = np.tile(years, len(person))
    counts = np.minimum(rng.poisson(rate[person_year]), ROWS_PER_YEAR_MAX)
    row_of = np.repeat(np.arange(len(person_year)), counts)
    who = person_year[row_of]
    drug = rng.integers(0, len(DRUG_CLASSES), len(row_of))
    diag = diagnosis[who]
    typical = rng.random(len(row_of)) < 0.75
    pick = rng.random(len(row_of))
    for d, classes in DRUGS_OF_DIAGNOSIS.items():
        mine = typical & (diag == d)
        drug[mine] = np.asarray(classes)[np.minimum((pick[mine] * len(classes)).astype(int), len(classes) - 1)]
    ddd = np.round(np.clip(rng.gamma(2.0, mean_ddd / 2.0, len(row_of)), 0.0, DDD_MAX), 1)
    return person[who], year[row_of], drug, ddd


def _medication_table(seed: int, persons: _Persons, pt: _Patients) -> pa.Table:
    rng = _rng(seed, 6)
    person, year, drug, ddd = _drug_rows(rng, pt.person, pt.diagnosis, np.full(len(pt.person), 0.8), 30.0)
    return _drug_table(persons, person, year, drug, ddd)


def _pharmacy_table(seed: int, persons: _Persons, pt: _Patients) -> pa.Table:
    rng = _rng(seed, 7)
    n = len(persons.age)
    diagnosis = np.full(n, -1)
    diagnosis[pt.person] = pt.diagnosis
    rate = np.where(diagnosis >= 0, 1.5, 0.15 + 0.06 * persons.age)
    person, year, drug, ddd = _drug_rows(rng, np.arange(n), diagnosis, rate, 90.0)
    return _drug_table(persons, person, year, drug, ddd)


def _drug_table(persons: _Persons, person, year, drug, ddd) -> pa.Table:
    return pa.table({"pid": persons.pid.take(pa.array(person)), "year": pa.array(year.astype(np.int32)),
                     "drug_class": _labels(drug, DRUG_CLASSES), "ddd": ddd})


# -- catalog of the demo ----------------------------------------------------------------

def _key(space: str = "pseudonym", unique: bool = False, max_rows: int | None = None) -> Column:
    return Column("pid", "VARCHAR", Role.KEY, key_space=space, unique=unique, nullable=False, max_rows=max_rows)


def _dim(name: str, type_: str, domain) -> Column:
    return Column(name, type_, Role.DIMENSION, domain=tuple(domain), nullable=False)


def _measure(name: str, type_: str, lo, hi, scale: int = 0) -> Column:
    return Column(name, type_, Role.MEASURE, range=(lo, hi), scale=scale, nullable=False)


def _years(lo_hi: tuple[int, int]) -> range:
    return range(lo_hi[0], lo_hi[1] + 1)


def _drug_columns() -> tuple[Column, ...]:
    return (_key(max_rows=ROWS_PER_PERSON), _dim("year", "INTEGER", _years(YEARS)),
            _dim("drug_class", "VARCHAR", DRUG_CLASSES),
            _measure("ddd", "DOUBLE", 0, int(DDD_MAX), 1))


DEMO_SCHEMA: dict[str, dict[str, tuple[Column, ...]]] = {
    "hospital": {
        "patients": (_key(unique=True), _dim("diagnosis", "VARCHAR", DIAGNOSES),
                     _dim("diagnosis_year", "INTEGER", _years(DIAGNOSIS_YEARS)), _dim("sex", "VARCHAR", ("F", "M"))),
        "app_usage": (_key(unique=True), _measure("sessions", "INTEGER", 0, 500),
                      _measure("active_weeks", "INTEGER", 0, 52)),
        "medication": _drug_columns(),
    },
    "insurer": {
        "claims": (_key(max_rows=ROWS_PER_PERSON), _dim("year", "INTEGER", _years(YEARS)),
                   _dim("category", "VARCHAR", CATEGORIES),
                   _measure("cost_eur", "DOUBLE", 0, int(COST_MAX), 2)),
        "pharmacy": _drug_columns(),
    },
    "bureau": {
        "persons": (_key(unique=True), _dim("age_band", "VARCHAR", AGE_BANDS),
                    _dim("income_decile", "INTEGER", range(1, 11)), _dim("region", "VARCHAR", REGIONS)),
    },
}
FIRST_PORT = 7471


def _write(out_dir: Path, party: str, name: str, data: pa.Table) -> None:
    folder = out_dir / party
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, folder / f"{name}.parquet")


def _parties(schema: dict[str, dict[str, tuple[Column, ...]]]) -> list[Party]:
    return [Party(party, f"127.0.0.1:{FIRST_PORT + i}",
                  tuple(Table(party, name, Path(party) / f"{name}.parquet", "parquet", columns)
                        for name, columns in tables.items()))
            for i, (party, tables) in enumerate(schema.items())]


def generate(out_dir: Path, persons: int = 5000, seed: int = 20241, *, min_cell_size: int = 10,
             perturbation: str = "cell_key") -> Path:
    """Write the three-party demo federation into ``out_dir``; return the federation file's path.

    With ``perturbation = "cell_key"`` (the default) ad-hoc queries are perturbed and the saved
    queries of ``queries/`` (where the source tree has them) are approved: released exactly.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    people = _persons(seed, persons)
    patients = _patients(seed, people)
    tables = {
        ("bureau", "persons"): lambda: _persons_table(people),
        ("hospital", "patients"): lambda: _patients_table(people, patients),
        ("hospital", "app_usage"): lambda: _app_usage_table(seed, people, patients),
        ("hospital", "medication"): lambda: _medication_table(seed, people, patients),
        ("insurer", "claims"): lambda: _claims_table(seed, people, patients),
        ("insurer", "pharmacy"): lambda: _pharmacy_table(seed, people, patients),
    }
    for (party, name), build in tables.items():
        _write(out_dir, party, name, build())   # one table in memory at a time
    # CBS's rule for income statistics: no single person makes up more than 30 % of a released sum.
    def write(approved=None) -> Path:
        toml = federation_toml("care-demo", _parties(DEMO_SCHEMA), min_cell_size=min_cell_size,
                               comment=f"sqlmpc demo federation: {persons} persons, seed {seed} (generated).",
                               dominance=Dominance(1, 30.0), perturbation=perturbation, approved_plans=approved)
        path = out_dir / "federation.toml"
        path.write_text(toml, encoding="utf-8")
        return path

    path = write()
    if perturbation != "none":      # approvals name exact plans, which cover the file's fingerprint
        path = write(_approvals(path))
    return path


def _approvals(path: Path) -> dict[str, str]:
    """The saved queries' exact plan hashes (those that plan on this federation)."""
    if not SAVED_QUERIES.is_dir():
        return {}
    federation = load_federation(path)
    out = {}
    for file in sorted(SAVED_QUERIES.glob("*.sql")):
        try:
            out.update(approvals(file, federation))
        except errors.Error:
            continue                 # written for another federation (e.g. the horizontal one)
    return out


# -- horizontal: the same table at several hospitals -----------------------------------------

WARD_STAY_DAYS = np.array([6.0, 5.0, 4.5, 7.0, 8.0, 3.0])
WARD_DAILY_COST = np.array([1400.0, 1800.0, 900.0, 1200.0, 1600.0, 1000.0])


def _admissions_columns(party: str) -> tuple[Column, ...]:
    return (_key(f"{party}_mrn"), _dim("year", "INTEGER", _years(YEARS)), _dim("ward", "VARCHAR", WARDS),
            _measure("los_days", "INTEGER", 0, 365), _measure("cost_eur", "DOUBLE", 0, int(ADMISSION_COST_MAX), 2))


def _admissions_table(seed: int, index: int, rows: int) -> pa.Table:
    rng = _rng(seed, 100 + index)
    patients = _pseudonyms(rng, max(1, rows // 3), prefix="m")     # ~3 admissions per patient
    who = rng.integers(0, len(patients), rows)
    # Each hospital has its own ward mix, so the horizontal sum differs from any one part.
    mix = rng.dirichlet(np.full(len(WARDS), 4.0))
    ward = _choice(rng, rows, mix)
    los = np.clip(np.round(rng.gamma(1.5, WARD_STAY_DAYS[ward] / 1.5)), 0, 365).astype(np.int32)
    cost = _cents((los + 0.5) * WARD_DAILY_COST[ward] * rng.lognormal(-0.045, 0.3, rows), ADMISSION_COST_MAX)
    year = rng.integers(YEARS[0], YEARS[1] + 1, rows).astype(np.int32)
    return pa.table({"pid": patients.take(pa.array(who)), "year": year, "ward": _labels(ward, WARDS),
                     "los_days": los, "cost_eur": cost})


def generate_horizontal(out_dir: Path, rows_per_party: int, parties: int = 3, seed: int = 7) -> Path:
    """``parties`` hospitals (hospital_a, hospital_b, ...) with an ``admissions`` table each."""
    if not 1 <= parties <= 26:
        raise ValueError("parties must be between 1 and 26")
    out_dir = Path(out_dir)
    names = [f"hospital_{chr(ord('a') + i)}" for i in range(parties)]
    schema = {name: {"admissions": _admissions_columns(name)} for name in names}
    for i, name in enumerate(names):
        _write(out_dir, name, "admissions", _admissions_table(seed, i, rows_per_party))
    toml = federation_toml("hospitals-horizontal", _parties(schema), min_cell_size=10,
                           comment=f"sqlmpc horizontal demo: {parties} hospitals × {rows_per_party} admissions, "
                                   f"seed {seed} (generated).")
    if parties < 3:
        toml = toml.replace("[policy]", "# fewer than 3 parties: no secrecy, demo only\n[policy]", 1)
        toml = toml.replace('name = "hospitals-horizontal"\n', 'name = "hospitals-horizontal"\ninsecure_demo = true\n')
    path = out_dir / "federation.toml"
    path.write_text(toml, encoding="utf-8")
    return path
