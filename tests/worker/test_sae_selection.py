"""Selecting many SAEs with a regular expression over a release's ids (worker/loading.py select_ids)."""

from __future__ import annotations

import pytest

from worker.errors import BadInput
from worker.loading import resolve_saes


def test_a_saelens_release_regex_expands_to_exactly_the_matching_ids() -> None:
    """SAELens's own pretrained_saes.yaml (shipped in the package: no Hub) lists the release's ids."""
    refs = resolve_saes(r"gpt2-small-res-jb/blocks\.[0-5]\..*")
    assert [r.name for r in refs] == [f"gpt2-small-res-jb/blocks.{i}.hook_resid_pre" for i in range(6)]
    assert {(r.release, r.path) for r in refs} == {("gpt2-small-res-jb", None)}


def test_a_bundled_release_regex_expands_in_the_releases_order() -> None:
    refs = resolve_saes(r"demo-res/blocks\.[13]\.hook_resid_pre")
    assert [r.sae_id for r in refs] == ["blocks.1.hook_resid_pre", "blocks.3.hook_resid_pre"]
    assert all(r.path is not None and (r.path / "cfg.json").exists() for r in refs)


def test_an_exact_id_is_taken_as_it_is() -> None:
    assert [r.sae_id for r in resolve_saes("demo-res/blocks.2.hook_resid_pre")] == ["blocks.2.hook_resid_pre"]


@pytest.mark.parametrize("entry", [r"demo-res/blocks\.[7-9]\..*", r"gpt2-small-res-jb/layer\.0"])
def test_a_regex_matching_nothing_is_refused_with_the_ids_that_exist(entry: str) -> None:
    with pytest.raises(BadInput, match=r"has no SAE .*; it has blocks\.0\.hook_resid_pre, blocks\.1\."):
        resolve_saes(entry)


def test_a_regex_must_match_a_whole_id() -> None:
    with pytest.raises(BadInput, match="has no SAE"):
        resolve_saes(r"demo-res/blocks\.1")  # a prefix of an id, not an id


def test_an_invalid_regex_is_refused() -> None:
    with pytest.raises(BadInput, match="nor is it a valid regex"):
        resolve_saes("demo-res/blocks[")
