"""The worker's subcommands of `saegap` (evaluate, submit, status, jobs, cancel, worker).

Commands write their output with `out` and `err` (library code logs instead).
"""

from __future__ import annotations

import sys


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(f"saegap: {text}\n")
