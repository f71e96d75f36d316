"""The sqlmpc SQL dialect: parse text into statements over sqlglot trees."""

from sqlmpc.sql.parser import parse, parse_query
from sqlmpc.sql.statements import Describe, Explain, Query, ShowPolicy, ShowTables, Statement

__all__ = ["parse", "parse_query", "Statement", "Query", "Explain", "ShowTables", "ShowPolicy", "Describe"]
