"""Shared test fixtures. Append new fixtures; never remove others'."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture
def tmp_store(tmp_path: Path) -> Iterator[object]:
    """A fresh local store (SQLite job tables + SQLite-catalog DuckLake) under tmp_path/store."""
    from schema.config import StoreConfig
    from schema.store import Store

    store = Store.open(StoreConfig(data_dir=tmp_path / "store"))
    yield store
    store.close()


@pytest.fixture(scope="session")
def fixture_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The seeded analysis fixture (tests/fixture_store.py), written once per session through the store API.

    Yields a tests.fixture_store.Fixture: `.store`, `.job_ids["all" | "single"]`, `.run_ids[(job, sae)]`;
    its data dir is `.store.config.data_dir`. Read-only for tests: build your own to write.
    """
    from tests.fixture_store import build_fixture_store

    fixture = build_fixture_store(tmp_path_factory.mktemp("analysis_fixture"))
    yield fixture
    fixture.store.close()
