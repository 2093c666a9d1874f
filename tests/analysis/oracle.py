"""Independent answers for the analysis tests: pandas over the fixture's engine tables, never the store."""

from __future__ import annotations

import functools

import pandas as pd

from tests.fixture_store import Fixture, fixture_jobs


@functools.cache
def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    tokens, interventions = [], []
    for job in fixture_jobs():
        for run in job.runs:
            keys = {"job": job.name, "sae": run.meta["sae"], "layer": run.meta["layer"], "scope": run.meta["scope"]}
            tokens.append(run.tokens.to_pandas().assign(**keys))
            interventions.append(run.interventions.to_pandas().assign(**keys))
    return pd.concat(tokens, ignore_index=True), pd.concat(interventions, ignore_index=True)


def tokens() -> pd.DataFrame:
    """Every token row of the fixture with job name, sae, layer and scope."""
    return _frames()[0].copy()


def interventions() -> pd.DataFrame:
    """Every intervention row of the fixture with job name, sae, layer and scope."""
    return _frames()[1].copy()


def gaps(job: str, sae: str) -> pd.DataFrame:
    """token_gaps by hand: intervened tokens with kl_sae, kl_eps_random (sample 0) and kl_gap."""
    rows = interventions().query("job == @job and sae == @sae and sample == 0")
    wide = rows.pivot_table(index=["sequence", "position"], columns="intervention", values="kl").add_prefix("kl_")
    merged = wide.reset_index().merge(tokens().query("job == @job and sae == @sae"), on=["sequence", "position"])
    merged = merged[merged.intervened]
    return merged.assign(kl_gap=merged.kl_sae.astype(float) - merged.kl_eps_random.astype(float))


def run_id(fixture: Fixture, job: str, sae: str) -> int:
    return fixture.run_ids[(job, sae)]
