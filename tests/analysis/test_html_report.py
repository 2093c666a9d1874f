"""The HTML report opens with the answer, draws the seed's figures in fixed colours, ends with the job's
spec, and renders in a real browser (Debian chromium, headless), whose first screen is kept in
docs/screenshots/report.png. Needs scripts/setup_browser.sh; fails, not skips, without chromium.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from analysis.colours import colour_of
from analysis.html_report import build_report
from tests.analysis.test_amplification import planted  # noqa: F401  (the planted amplification store)
from tests.fixture_store import PLANTED_KL_RATIO, Fixture

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def page(fixture_store: Fixture) -> str:
    return build_report(fixture_store.job_ids["all"], fixture_store.store)


def test_the_answer_comes_first_with_its_numbers(page: str) -> None:
    answer = page.index("<h2>The answer</h2>")
    assert answer < page.index("<svg") and answer < page.index("<h2>Mean KL per layer</h2>")
    low, high = min(PLANTED_KL_RATIO.values()), max(PLANTED_KL_RATIO.values())
    # fixture-a: ratios 2, 3, 4 at layers 0-2, each CI above 1
    assert "fixture-a: At 3 of 3 layers the SAE's KL is significantly above that of a random point" in page
    assert f"{low:.2f}-{high:.2f}x (95% CIs within" in page and "pathological at layers 0, 1, 2" in page
    assert "no gap" in page  # fixture-b against eps_real_diff: ratio 1.5 / 1.5 = 1


def test_seed_figures_colours_and_job_facts(page: str) -> None:
    for title in ("Mean KL per layer", "Mean CE-loss increase per layer", "Distribution of per-token KL",
                  "Distribution of the CE-loss increase", "KL by position", "KL gap across layers",
                  "Top tokens by mean KL gap", "Sensitivity to cos_sim"):  # fmt: skip
        assert f"<h2>{title}</h2>" in page
    assert colour_of("sae").lower() in page.lower() and colour_of("eps_random").lower() in page.lower()
    assert "p99.9" in page and "(mean +0.2)" in page  # histogram legends: the tail and the CE mean
    facts = page.index("spec and versions</h2>")
    assert facts > page.rindex("<svg") and '"sae_lens": "none"' in page[facts:]  # versions at the end


def test_report_renders_in_chromium(page: str, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "run scripts/setup_browser.sh (Debian chromium)"
    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")
    url = html_file.as_uri()
    dom = subprocess.run([str(CHROMIUM), *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0 and "The answer" in dom.stdout and "pathological" in dom.stdout
    shot = tmp_path / "report.png"
    command = [str(CHROMIUM), *FLAGS, f"--screenshot={shot}", "--window-size=1300,900", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
    shutil.copyfile(shot, ROOT / "docs" / "screenshots" / "report.png")


def test_where_does_the_gap_come_from_shows_the_amplification(planted: Fixture) -> None:  # noqa: F811
    page = build_report(planted.job_ids["amp"], planted.store)
    section = page[page.index("<h2>Where does the gap come from?</h2>") :]
    assert "<h2>How far each error is amplified through later layers</h2>" in section
    # sae ends at layer 3 with r 4 c against eps_random's 2 c: a point interval at 2
    assert (
        "at layer 3 <b>sae</b> pushes the residual stream 2x [2, 2] as far as eps_random, from the same distance"
        in section
    )
    assert "grows faster than a random error of the same size" in section
    assert "<svg" in section and colour_of("sae").lower() in section.lower()
    assert "error's linear and nonlinear parts" not in section  # no error parts in this job
