"""A real browser (Debian chromium via playwright-core) through `saegap ui` on the fixture store.

Every page on an all-token job with two SAEs at one layer and a single-token job with samples,
then an attention (hook_z) job submitted on the bundled demo model, followed to its results.
tests/ui/browser/drive.mjs asserts what a user sees (no exception text on any page, the verdict
sentence, the downstream axis labelled at every offset, the hexbin plot's cells, no Deploy
button, an unknown SAE refused before starting) and writes one screenshot per page to
docs/screenshots/. Needs scripts/setup_browser.sh (chromium + node_modules); the test fails,
not skips, without them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixture_store import build_fixture_store

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "ui" / "browser" / "drive.mjs"
SHOTS = ROOT / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "saegap ui exited early"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"saegap ui not healthy at {url} after {timeout_s} s")


PAGES = ("jobs", "layer_summary", "distributions", "correlations", "tokens", "single_token", "context", "sql_console")
CHECKS = (
    "verdict sentence", "hexbin plot renders", "downstream axis labelled at every offset", "no Deploy button",
    "unknown SAE refused before starting", "attention job finished", "result link opens the attention job",
)  # fmt: skip


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    fixture = build_fixture_store(tmp_path / "store")
    fixture.store.close()
    port = free_port()
    env = {**os.environ, "SAEGAP_DATA": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env.pop("SAEGAP_BROKER_URL", None)
    command = [sys.executable, "-m", "saegap.cli", "ui", "--port", str(port), "--host", "127.0.0.1"]
    log = (tmp_path / "ui.log").open("wb")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        yield f"http://127.0.0.1:{port}", fixture.job_ids
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_page_in_a_real_browser(ui_server: tuple[str, dict[str, int]]) -> None:
    url, jobs = ui_server
    assert Path("/usr/bin/chromium").exists() and (DRIVER.parent / "node_modules").exists(), (
        "run scripts/setup_browser.sh"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    # The attention job on the bundled demo model, through the same names a user types.
    sae = "demo-attn/blocks.2.attn.hook_z"
    command = ["node", str(DRIVER), url, str(SHOTS), str(jobs["all"]), str(jobs["single"]), "demo", sae, "demo"]
    done = subprocess.run(command, cwd=DRIVER.parent, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    for check in CHECKS:
        assert f"ok {check}" in done.stdout, done.stdout
    assert done.stdout.count("ok no exception text on") >= len(PAGES) + 1
    for name in (*PAGES, "layer_summary_attention"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
