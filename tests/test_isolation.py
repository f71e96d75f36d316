"""A party node holds only its own data: it loads its own files and can read nothing else."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from sqlmpc.catalog import load_federation
from sqlmpc.errors import DataFileError
from sqlmpc.party.node import PartyNode


def test_node_database_has_only_its_own_tables(federation):
    node = PartyNode(federation, "hospital")
    tables = node.db.sql("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
    assert {s for s, _ in tables} == {"hospital"}
    assert sorted(n for _, n in tables) == sorted(t.name for t in federation.party("hospital").tables)
    with pytest.raises(duckdb.CatalogException):
        node.db.sql("SELECT COUNT(*) FROM insurer.claims").fetchall()


def test_node_cannot_read_another_partys_files(federation):
    node = PartyNode(federation, "hospital")
    other = federation.table("insurer", "claims").source
    with pytest.raises(duckdb.PermissionException):
        node.db.sql(f"SELECT COUNT(*) FROM read_parquet('{other}')").fetchall()
    with pytest.raises(duckdb.Error):                       # and it cannot switch file access back on
        node.db.execute("SET enable_external_access = true")


def test_node_never_opens_other_parties_sources(tmp_path, demo_path):
    """The hospital starts although every other party's files are missing from its machine."""
    copy = tmp_path / "hospital-only"
    shutil.copytree(demo_path.parent / "hospital", copy / "hospital")
    shutil.copy(demo_path, copy / "federation.toml")
    fed = load_federation(copy / "federation.toml")
    assert not (copy / "insurer").exists() and not (copy / "bureau").exists()
    node = PartyNode(fed, "hospital")
    assert node.db.sql("SELECT COUNT(*) FROM hospital.patients").fetchall()[0][0] > 0
    with pytest.raises(DataFileError, match="data file not found"):
        PartyNode(fed, "insurer")                           # its own files are not here
