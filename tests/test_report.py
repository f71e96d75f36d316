"""``sqlmpc run --report out.html``: one self-contained page, a table and a chart per query, suppressed marked."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from sqlmpc.oracle import run_oracle

QUERIES = Path(__file__).parent.parent / "queries"
NAMES = ["small_cells_suppressed", "claim_categories"]


class Tags(HTMLParser):
    """Every start tag with its attributes, in order; and the text of table cells."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def count(self, tag: str, **attrs) -> int:
        return sum(t == tag and all(a.get(k) == v for k, v in attrs.items()) for t, a in self.tags)


def test_report_has_a_table_and_a_chart_per_query_with_suppressed_cells_marked(demo_path, federation, tmp_path):
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--federation", str(demo_path), "--oracle",
                           "run", "--report", str(out), *(str(QUERIES / f"{n}.sql") for n in NAMES)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    tags = Tags()
    tags.feed(page)
    assert tags.count("table") == len(NAMES) and tags.count("svg") == len(NAMES)
    assert [a["id"] for t, a in tags.tags if t == "h2"] == NAMES
    # Self-contained: nothing is fetched.
    assert tags.count("script") == tags.count("link") == tags.count("img") == 0
    assert not re.search(r"""(src|href)=["']?https?:""", page)

    results = {n: run_oracle((QUERIES / f"{n}.sql").read_text(), federation) for n in NAMES}
    suppressed_cells = sum(sum(v is None for v in row) for n in NAMES
                           for row, s in zip(results[n].rows(), results[n].suppressed) if s)
    assert suppressed_cells > 0
    assert tags.count("td", **{"class": "suppressed"}) == suppressed_cells
    suppressed_rows = sum(sum(r.suppressed) for r in results.values())
    assert tags.count("rect", **{"class": "suppressed"}) == suppressed_rows       # hatched stubs in the charts
    released = sum(len(r.suppressed) - sum(r.suppressed) for r in results.values())
    assert tags.count("rect", **{"class": "value"}) == released
