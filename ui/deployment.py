"""What a UI deployment lets its users do (docs/security.md): job actions on or off, which token sets.

- Read-only: `saegap ui --read-only`, or SAEGAP_UI_READ_ONLY=1, hides job submission and cancel;
  the pages, the job list and the SQL console (reads only in any case) stay.
- Token sets from the Jobs form: a bundled name (models/registry.json) or a .npy file under the
  data dir (SAEGAP_DATA); SAEGAP_UI_TOKEN_DIRS (directories separated by ':') allows files under
  more directories. A path is resolved (symlinks, '..') before it is checked, and the job gets the
  resolved absolute path, so a worker with another working directory reads the file that was checked.
"""

from __future__ import annotations

import os
from pathlib import Path

READ_ONLY_ENV = "SAEGAP_UI_READ_ONLY"
TOKEN_DIRS_ENV = "SAEGAP_UI_TOKEN_DIRS"


def read_only() -> bool:
    """Whether this UI hides every action that changes jobs (submit, cancel)."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def token_dirs() -> list[Path]:
    """Directories whose files the Jobs form accepts as token sets: the data dir, then SAEGAP_UI_TOKEN_DIRS."""
    from ui.data import jobs_api  # not at import: the CLI reads READ_ONLY_ENV without loading streamlit

    extra = [Path(part).expanduser() for part in os.environ.get(TOKEN_DIRS_ENV, "").split(os.pathsep) if part.strip()]
    return [path.resolve() for path in (jobs_api().data_dir(), *extra)]


def allowed_token_set(name: str | None) -> tuple[str | None, str | None]:
    """(what the job should name, None) for a bundled token set or a file under token_dirs();
    (name, the reason) for anything else."""
    from ui.data import jobs_api

    bundled = jobs_api().bundled_token_sets()
    if name is None or name in bundled:  # None: the SAE's own dataset (worker/token_sources.py)
        return name, None
    path = Path(name).expanduser().resolve()
    roots = token_dirs()
    if any(path.is_relative_to(root) for root in roots):
        return str(path), None
    return name, (
        f"token set {name!r} is neither a bundled name ({', '.join(bundled) or 'none'}) nor a file under "
        f"{', '.join(map(str, roots))}; the operator can allow more directories with {TOKEN_DIRS_ENV}"
    )
