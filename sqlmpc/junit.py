"""JUnit XML for ``sqlmpc run --junit FILE``: one test case per saved query, for CI systems."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def write_junit(outcomes, path: Path, suite: str = "sqlmpc run") -> None:
    """Write ``outcomes`` (each with .path, .seconds, .failure, .details) as a JUnit testsuite."""
    failures = sum(o.failure is not None for o in outcomes)
    root = ET.Element("testsuite", name=suite, tests=str(len(outcomes)), failures=str(failures), errors="0",
                      time=f"{sum(o.seconds for o in outcomes):.3f}")
    for o in outcomes:
        case = ET.SubElement(root, "testcase", classname=o.path.parent.name or ".", name=o.path.stem,
                             file=str(o.path), time=f"{o.seconds:.3f}")
        if o.failure is not None:
            failure = ET.SubElement(case, "failure", message=o.failure, type="difference")
            failure.text = o.details
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
