"""The reports in a real browser (headless Chromium): no table wider than its container, 1024 to 1920 px wide.

Chromium comes from the OS packages (Debian: ``apt-get install -y chromium``; `.ci/run` installs it). The
page is loaded from a copy of the report with a measuring script appended; ``--dump-dom`` returns the
DOM after the script ran, with its findings. Screenshots of every width are written beside the copy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ope.cli import main
from tests.integration.test_tune import TUNE_CONFIG

WIDTHS = (1024, 1366, 1920)
NARROW = (760, 560)   # MLflow's artifact preview: about 580 px of a 1366 px screen; tables stack
MEASURE = """<script>
window.addEventListener('load', () => {
  const root = document.documentElement, wide = [];
  document.querySelectorAll('table, svg, pre, .warn').forEach((el) => {
    const box = el.parentElement, cs = getComputedStyle(box);
    const room = box.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const width = el.getBoundingClientRect().width;
    if (width > room + 1) wide.push({tag: el.tagName, width: Math.round(width), room: Math.round(room),
                                     text: (el.textContent || '').trim().slice(0, 80)});
  });
  const out = document.createElement('pre');
  out.id = 'layout-result';
  out.textContent = JSON.stringify({viewport: root.clientWidth, page: root.scrollWidth, tables: document.querySelectorAll('table').length, wide});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is needed to check the report layout: apt-get install -y chromium (.ci/run does it)")
    return found


def _layout(page: Path, width: int, shots: Path) -> dict[str, object]:
    """Load ``page`` at ``width`` × 900 px in headless Chromium; return what the measuring script found."""
    probe = shots / f"{page.stem}-probe.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},900",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="layout-result">([^<]*)</pre>', dom.stdout)
    assert found, f"Chromium returned no measurement (exit {dom.returncode}): {dom.stderr[-1500:]}"
    subprocess.run([*flags, f"--screenshot={shots / f'{page.stem}-{width}.png'}", page.as_uri()], capture_output=True,
                   timeout=120, check=False)
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.fixture(scope="module")
def reports(simulated: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """report.html of a run with model-based estimators and tune.html of a sweep with an infeasible setting."""
    tmp = tmp_path_factory.mktemp("layout")
    config = tmp / "tune.toml"        # three settings swept, one infeasible with a long reason: the widest tune table
    config.write_text(TUNE_CONFIG.format(logs=simulated[0], catalog=simulated[1], tmp=tmp, target=0.3).replace(
        "min_satisfaction = [0.0, 0.99]", "min_satisfaction = [0.0, 0.99]\nmax_cost_usd = [0.0005, 0.01]"))
    assert main(["run", str(config), "--out", str(tmp / "r"), "--run-name", "run", "--quiet", "--no-tracking"]) == 0
    assert main(["tune", str(config), "--out", str(tmp / "r"), "--run-name", "tune", "--quiet", "--no-tracking"]) == 0
    assert "infeasible" in (tmp / "r" / "tune" / "tune.html").read_text()
    return {"report": tmp / "r" / "run" / "report.html", "tune": tmp / "r" / "tune" / "tune.html"}


@pytest.mark.parametrize("width", [*WIDTHS, *NARROW])
@pytest.mark.parametrize("page", ["report", "tune"])
def test_no_table_is_wider_than_its_container(page: str, width: int, reports: dict[str, Path]) -> None:
    found = _layout(reports[page], width, reports[page].parent)
    assert found["tables"] >= 2
    assert found["wide"] == [], f"{page} at {width} px: {found['wide']}"
    assert found["page"] <= found["viewport"], f"{page} at {width} px scrolls sideways: {found}"
    assert (reports[page].parent / f"{reports[page].stem}-{width}.png").stat().st_size > 10_000
