"""Errors opening the lake name the catalog and never carry its credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema import lake
from schema.config import StoreConfig
from schema.errors import StoreOpenError


def test_a_catalog_that_cannot_be_reached_is_named_without_its_password(tmp_path: Path) -> None:
    """DuckDB's ATTACH error quotes the libpq conninfo; the StoreOpenError must not carry the password."""
    url = "postgresql://postgres:s3cret-Pw@127.0.0.1:5432/saegap_no_such_database"
    config = StoreConfig(data_dir=tmp_path, database_url=url, data_path=str(tmp_path / "lake"))
    with pytest.raises(StoreOpenError) as raised:
        lake.connect(config, read_only=False)
    message = str(raised.value)
    assert "saegap_no_such_database" in message
    assert "s3cret-Pw" not in message
    assert "password=***" in message
