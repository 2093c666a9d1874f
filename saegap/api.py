"""The Python API for notebooks: `saegap.evaluate(model, saes, tokens=None, data_dir=None, **job_fields)`.

No broker and no server: records go to `data_dir` (a local store: SQLite and Parquet files), or
to a fresh temporary directory when none is given. The job starts through worker.api.start, the
function the CLI and the UI call, always in this process: SAEGAP_BROKER_URL is not used, since a
queue's workers write to their own SAEGAP_DATA store, not to `data_dir`, and objects in this
process's memory (a model, an SAE, a token tensor) cannot be sent to them. Every input is loaded
and checked before the job is stored, so bad input writes nothing. Importing this module loads
no model library.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from schema.config import StoreConfig
from schema.spec import JobSpec
from schema.store import Store


class JobFailed(RuntimeError):
    """The job ran and failed (its one-line error is the message); its row stays in the store."""


@dataclass
class Results:
    """One finished job's records, read through analysis/ (pandas DataFrames) or SQL."""

    job_id: int
    data_dir: Path
    store: Store = field(repr=False)

    @property
    def warnings(self) -> list[str]:
        """What to know beside the numbers, e.g. a bare .npy token set whose tokenizer nothing checked."""
        return self.store.get_job(self.job_id).warnings

    def report(self, name: str, **params: Any) -> pd.DataFrame:
        """Analysis module `name` (see `saegap report`) for this job; params are its other fields."""
        from analysis.registry import get_module

        module = get_module(name)
        return module(module.params(**{"job": self.job_id, **params}), store=self.store).to_pandas()

    def layer_summary(self, **params: Any) -> pd.DataFrame:
        """Per layer and intervention: mean KL, the sae/eps_random ratio with its bootstrap CI, CE increase."""
        return self.report("layer_summary", **params)

    def sql(self, query: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """A read-only SQL query over the store's views (token_records, runs, jobs, ...)."""
        from schema.read import query as read_query

        return read_query(query, params, store=self.store).to_pandas()

    def html(self, path: str | Path) -> Path:
        """Write the job's self-contained HTML report to `path`; returns it."""
        from analysis.html_report import build_report

        out = Path(path)
        out.write_text(build_report(self.job_id, store=self.store), encoding="utf-8")
        return out


def evaluate(
    model: Any,
    saes: Any,
    tokens: Any = None,
    data_dir: str | Path | None = None,
    **job_fields: Any,
) -> Results:
    """Evaluate SAEs spliced into a model; returns the finished job's Results.

    model: a name (TransformerLens or bundled), a local directory, or a loaded HookedTransformer.
    saes: one or a list of names (`release/id`, a release), SAE directories, or sae_lens.SAE objects.
    tokens: what `--tokens` accepts, or a (sequences, positions) token tensor/array; None: the default.
    job_fields: any other JobSpec field (scope, interventions, n_sequences, samples, seed, ...).
    Bad input raises one clear error (BadInput, pydantic.ValidationError) and writes nothing.
    """

    directory = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="saegap-"))
    store = Store.open(StoreConfig(data_dir=directory))
    with _inputs(model, saes, tokens, directory / "inputs", job_fields) as spec:
        _prepare_first(spec, store)
        job = _start(spec, store)
    if job.status != "done":
        raise JobFailed(f"job {job.id} {job.status}: {job.error or 'no error recorded'}")
    return Results(job.id, directory, store)


def _listed(saes: Any) -> list[Any]:
    return list(saes) if isinstance(saes, Sequence) and not isinstance(saes, str) else [saes]


@contextmanager
def _inputs(model: Any, saes: Any, tokens: Any, root: Path, job_fields: dict[str, Any]) -> Iterator[JobSpec]:
    """The JobSpec naming every input; in-memory ones saved under `root` (removed again if the job cannot start)."""
    from worker import provided

    written: list[Path] = []
    fields = dict(job_fields)
    if provided.is_model(model):
        fields = provided.model_placement(model) | fields
        model = provided.register_model(model)
    try:
        entries = [_sae_entry(sae, root, written) for sae in _listed(saes)]
        if provided.is_token_array(tokens):
            written.append(provided.save_tokens(tokens, root))
            tokens = written[-1]
        token_field = {} if tokens is None else {"tokens": str(tokens)}
        yield JobSpec.model_validate({**fields, **token_field, "model": str(model), "saes": entries})
    except BaseException:
        _remove(written)
        raise
    finally:
        provided.unregister_model(str(model))


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _sae_entry(sae: Any, root: Path, written: list[Path]) -> str:
    from worker import provided

    if not provided.is_sae(sae):
        return str(sae)
    path = provided.save_sae(sae, root)
    written.append(path)
    return str(path)


def _prepare_first(spec: JobSpec, store: Store) -> None:
    """Load and check everything before the job is stored, so bad input writes nothing; the run reuses it.
    A text source is tokenized into `store`'s cache (data_dir's, whatever SAEGAP_DATA says)."""
    from worker.steps import prepared

    prepared(spec, store.config)


def _start(spec: JobSpec, store: Store) -> Any:
    """worker.api.start in this process, waiting: the store is `data_dir`'s, which a queue's workers (each with
    its own SAEGAP_DATA store) never see, so a configured broker is not used. TransformerLens's loading prints
    go to stderr as in the CLI."""
    import contextlib
    import sys

    from worker import api

    with contextlib.redirect_stdout(sys.stderr):
        return api.start(spec, store=store, where="here").job
