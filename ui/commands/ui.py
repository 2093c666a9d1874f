"""Serve the Streamlit UI (jobs, layer summary, distributions, correlations, tokens, SQL console).

Runs `streamlit run ui/app.py` headless on --host:--port in this process; the store is
the one the environment describes (SAEGAP_DATA or SAEGAP_DATABASE_URL, see schema/config.py).
Without SAEGAP_BROKER_URL, jobs submitted from the UI run in a background thread of the server.
--read-only (or SAEGAP_UI_READ_ONLY=1) hides job submission and cancel: for a shared deployment
(docs/security.md, ui/deployment.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path

from ui.deployment import READ_ONLY_ENV, read_only

APP = Path(__file__).resolve().parent.parent / "app.py"
log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8501, help="TCP port (default 8501)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    parser.add_argument(
        "--read-only", action="store_true", help=f"hide job submission and cancel (also: {READ_ONLY_ENV}=1)"
    )


def streamlit_flags(args: argparse.Namespace) -> dict[str, object]:
    """Streamlit config options: headless, no usage statistics, no file watcher."""
    return {
        "server.headless": True, "server.port": args.port, "server.address": args.host,
        "browser.gatherUsageStats": False, "server.fileWatcherType": "none", "server.runOnSave": False,
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from streamlit.web import bootstrap

    if not 0 < args.port < 65536:
        log.error("--port must be between 1 and 65535, got %d", args.port)
        return 2
    if args.read_only:
        os.environ[READ_ONLY_ENV] = "1"  # the app runs in this process and reads it (ui/deployment.py)
    log.info("saegap UI on http://%s:%d%s", args.host, args.port, " (read-only)" if read_only() else "")
    bootstrap.load_config_options(flag_options=streamlit_flags(args))
    # the store's warm-up starts with the server, not at the first page view: the first page finds more answered
    threading.Thread(target=_warm_once_serving, name="saegap-warm-start", daemon=True).start()
    bootstrap.run(str(APP), False, [], streamlit_flags(args))
    return 0


def _warm_once_serving(patience_s: float = 60.0) -> None:
    """ui.background.warm_store once Streamlit's runtime exists (its caches live there: imported earlier, the
    UI's cached functions would each log that no runtime was found)."""
    from streamlit import runtime

    deadline = time.monotonic() + patience_s
    while not runtime.exists():
        if time.monotonic() > deadline:
            return  # the server did not start; it says why itself
        time.sleep(0.05)
    from ui.background import warm_store

    warm_store()
