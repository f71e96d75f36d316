"""``sqlmpc run --report out.html``: one self-contained page, a table and a chart per query, suppressed marked.

The page is checked twice: as HTML (what it contains), and as a browser shows it
(headless Chromium: a screenshot, and the page's layout read from its DOM) —
every suppressed cell must be visibly hatched on the screen, no released cell may be.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sqlmpc.oracle import run_oracle

QUERIES = Path(__file__).parent.parent / "queries"
NAMES = ["small_cells_suppressed", "claim_categories"]
WINDOW = (1280, 4000)          # tall enough for both queries' charts and tables
BAR = (0x4A, 0x78, 0xB5)       # report.py's bar colour
STRIPE = (0xDD, 0xDD, 0xDD)    # the darker stripe of a suppressed table cell


class Tags(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def count(self, tag: str, **attrs) -> int:
        return sum(t == tag and all(a.get(k) == v for k, v in attrs.items()) for t, a in self.tags)


def tags_of(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


@pytest.fixture(scope="module")
def report(demo_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--federation", str(demo_path), "--oracle",
                           "run", "--report", str(out), *(str(QUERIES / f"{n}.sql") for n in NAMES)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def test_report_has_a_table_and_a_chart_per_query_with_suppressed_cells_marked(report, federation):
    page = report.read_text()
    tags = tags_of(page)
    assert tags.count("table") == len(NAMES) and tags.count("svg") == len(NAMES)
    assert [a["id"] for t, a in tags.tags if t == "h2"] == NAMES
    # Self-contained: nothing is fetched.
    assert tags.count("script") == tags.count("link") == tags.count("img") == 0
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    # Each chart shows the first aggregate, not a numeric dimension (claim_categories groups by year).
    assert [a["aria-label"] for t, a in tags.tags if t == "svg"] == ["patients", "claims"]

    results = {n: run_oracle((QUERIES / f"{n}.sql").read_text(), federation) for n in NAMES}
    suppressed_cells = sum(sum(v is None for v in row) for n in NAMES
                           for row, s in zip(results[n].rows(), results[n].suppressed) if s)
    assert suppressed_cells > 0
    assert tags.count("td", **{"class": "suppressed"}) == suppressed_cells
    suppressed_rows = sum(sum(r.suppressed) for r in results.values())
    assert tags.count("rect", **{"class": "suppressed"}) == suppressed_rows       # hatched stubs in the charts
    released = sum(len(r.suppressed) - sum(r.suppressed) for r in results.values())
    assert tags.count("rect", **{"class": "value"}) == released


# -- as a browser shows it -------------------------------------------------------------------------

# Added to a copy of the page only (the report itself has no scripts): where the browser laid out
# the cells and charts, and how it styled the suppressed cells.
PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const cells = sel => [...document.querySelectorAll(sel)].map(e => ({box: box(e), text: e.textContent,
    background: getComputedStyle(e).backgroundImage, title: e.getAttribute('title')}));
const probe = document.createElement('pre');
probe.id = 'probe';
probe.textContent = JSON.stringify({scale: window.devicePixelRatio, width: window.innerWidth,
    suppressed: cells('td.suppressed'), numbers: cells('td.num'),
    stubs: cells('svg rect.suppressed'), bars: cells('svg rect.value')});
document.body.appendChild(probe);
</script>"""


def chromium() -> str:
    """Chromium's path; it must be there in CI (.ci/run installs it), elsewhere the test is skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("headless Chromium is needed in CI: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    return found


def headless(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, with nothing that reaches for the network."""
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
                           f"--window-size={WINDOW[0]},{WINDOW[1]}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def share(image: Image.Image, box: list[float], colour: tuple, tolerance: int = 8) -> float:
    """The share of the pixels inside ``box`` (CSS px) that have ``colour``."""
    left, top, right, bottom = (round(v) for v in box)
    pixels = np.asarray(image.crop((left + 1, top + 1, right - 1, bottom - 1)), dtype=int)
    return float(np.all(np.abs(pixels - colour) <= tolerance, axis=-1).mean())


def test_report_screenshot_shows_suppressed_cells_hatched(report, tmp_path):
    shot = tmp_path / "report.png"
    done = headless(report, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW

    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = headless(probed, tmp_path / "profile-dom", "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["scale"] == 1 and layout["width"] <= WINDOW[0]

    # The DOM as the browser built it marks each suppressed cell: '·', a tooltip, a hatched background.
    assert len(layout["suppressed"]) == tags_of(report.read_text()).count("td", **{"class": "suppressed"})
    for cell in layout["suppressed"]:
        assert cell["text"] == "·" and "fewer than k persons, a dominant contributor, or protecting another cell" in cell["title"]
        assert cell["background"].startswith("repeating-linear-gradient")
    # On the screen (the whole page fits the window): every suppressed cell is striped, no released number
    # is; released bars are drawn in the bar colour, suppressed stubs are hatched instead.
    boxes = [c["box"] for kind in ("suppressed", "numbers", "bars", "stubs") for c in layout[kind]]
    assert all(b[3] < WINDOW[1] for b in boxes)
    assert layout["suppressed"] and layout["numbers"] and layout["bars"] and layout["stubs"]
    assert all(share(image, c["box"], STRIPE) > 0.3 for c in layout["suppressed"])   # half the cell is stripe
    assert all(share(image, c["box"], STRIPE) < 0.1 for c in layout["numbers"])      # anti-aliased digits only
    assert all(share(image, b["box"], BAR) > 0.9 for b in layout["bars"])
    assert all(share(image, s["box"], BAR) == 0 and share(image, s["box"], (0xEE, 0xEE, 0xEE)) > 0.1
               for s in layout["stubs"])
