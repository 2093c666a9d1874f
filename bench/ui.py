"""Time each UI page until it is idle in a real browser (chromium via playwright-core), on a store.

Starts `saegap ui` on the store in --data-dir, opens every page on the store's newest finished
job of the page's scope (tests/ui/browser/idle.mjs; a page is idle when Streamlit shows no
running script, spinner or stale element on three checks 50 ms apart) and prints one JSON line
per page: the first visit (cold: none of the page's answers asked for before, unless the server's
warm-up thread, ui/background.py, has computed them by then) and the best later visit. All tabs share
one browser context, so the app's JavaScript is fetched once, on an untimed first visit whose time
is printed apart (first_visit_empty_browser_cache_s).
Needs scripts/setup_browser.sh. Target (issue 15): every page idle within 2 s on the demo job's
store, 3 s at seed scale (bench/store.py).

Usage: .venv/bin/python -m bench.ui --data-dir .work/ui-demo-store [--repeats 3] [--pages layer_summary ...]
(as a module: it imports tests/). The demo job's store: SAEGAP_DATA=.work/ui-demo-store .venv/bin/python -m
saegap.cli evaluate. --read-only starts the UI read-only (no job actions). A store someone else writes is timed on
a copy of its two SQLite files with SAEGAP_DATA_PATH set to its lake directory, so nothing of it is written:
--data-dir COPY, and SAEGAP_DATA_PATH=ORIGINAL/lake in the environment (the UI and this script open the store).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from tests.ui.test_browser import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
IDLE = ROOT / "tests" / "ui" / "browser" / "idle.mjs"
# (page path, scope of the job it opens on; None: any)
PAGES = (
    ("jobs", None), ("layer_summary", "all_tokens"), ("distributions", "all_tokens"), ("correlations", None),
    ("tokens", None), ("single_token", "single_token"), ("context", None), ("gap_sources", "all_tokens"),
    ("sql_console", None),
)  # fmt: skip
log = logging.getLogger("bench.ui")


def newest_done(data_dir: Path) -> dict[str | None, int]:
    """The newest finished job per scope (None: of any scope) in the store, as the pages pick it."""
    from schema.config import StoreConfig
    from schema.store import Store

    store = Store.open(StoreConfig(data_dir=data_dir, data_path=os.environ.get("SAEGAP_DATA_PATH") or None))
    jobs = [job for job in store.list_jobs(limit=100) if job.status == "done"]
    store.close()
    found: dict[str | None, int] = {None: jobs[0].id} if jobs else {}
    for job in reversed(jobs):
        found[job.spec.scope.kind] = job.id  # newest last, so it wins
    return found


def paths(data_dir: Path, names: list[str] | None = None) -> list[str]:
    """The pages to time (all, or `names` in PAGES order) as URL paths on the newest finished job of their scope."""
    jobs = newest_done(data_dir)
    return [name if scope is None and name in ("jobs", "sql_console") else f"{name}?job={jobs[scope]}"
            for name, scope in PAGES if scope in jobs and (names is None or name in names)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".work/ui-demo-store"))
    parser.add_argument("--repeats", type=int, default=3, help="visits per page; the first is cold")
    parser.add_argument("--pages", nargs="+", choices=[name for name, _ in PAGES], help="only these pages")
    parser.add_argument("--read-only", action="store_true", help="start the UI read-only (SAEGAP_UI_READ_ONLY=1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    port = free_port()
    env = {**os.environ, "SAEGAP_DATA": str(args.data_dir.resolve()), "HF_HUB_OFFLINE": "1"}
    env.pop("SAEGAP_BROKER_URL", None)
    if args.read_only:
        env["SAEGAP_UI_READ_ONLY"] = "1"
    command = [sys.executable, "-m", "saegap.cli", "ui", "--port", str(port), "--host", "127.0.0.1"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server)
        log.info(json.dumps({"store": str(args.data_dir), "cpus": os.cpu_count(), "load": os.getloadavg()}))
        pages = paths(args.data_dir, args.pages)
        done = subprocess.run(["node", str(IDLE), url, str(args.repeats), *pages], cwd=IDLE.parent, text=True,
                              capture_output=True, check=True)  # fmt: skip
        log.info(done.stdout.strip())
        log.info(json.dumps({"load_at_end": os.getloadavg()}))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
