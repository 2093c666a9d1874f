"""Serve the Streamlit UI (jobs, layer summary, distributions, correlations, tokens, SQL console).

Runs `streamlit run ui/app.py` headless on --host:--port in this process; the store is
the one the environment describes (SAEGAP_DATA or SAEGAP_DATABASE_URL, see schema/config.py).
Without SAEGAP_BROKER_URL, jobs submitted from the UI run in a background thread of the server.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"
log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8501, help="TCP port (default 8501)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")


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
    log.info("saegap UI on http://%s:%d", args.host, args.port)
    bootstrap.load_config_options(flag_options=streamlit_flags(args))
    bootstrap.run(str(APP), False, [], streamlit_flags(args))
    return 0
