"""Where the store keeps things: job database, DuckLake catalog and Parquet data files.

Local default: everything under one data directory (`SAEGAP_DATA`, else
`./saegap-data`): `jobs.sqlite` (job tables), `lake.sqlite` (DuckLake catalog) and
`lake/` (Parquet). Deployments set `SAEGAP_DATABASE_URL` (a SQLAlchemy PostgreSQL URL:
job tables and the DuckLake catalog share that database, the catalog in schema
`ducklake`) and `SAEGAP_DATA_PATH` (a local directory or an s3:// URL for Parquet).
The read processes of schema.read take `SAEGAP_READ_DATABASE_URL` (a SELECT-only role),
`SAEGAP_READ_MEMORY_LIMIT` and `SAEGAP_READ_PROCESSES` (docs/security.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import URL, make_url

LAKE_ALIAS = "lake"  # name the DuckLake is attached under in every DuckDB connection
LAKE_METADATA_SCHEMA = "ducklake"  # PostgreSQL schema of the catalog, apart from the job tables


class StoreConfig(BaseModel):
    """Locations of one store. `from_env()` is what every process uses by default."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path = Field(default=Path("saegap-data"), validate_default=True)
    database_url: str | None = None  # SQLAlchemy URL; None: SQLite files in data_dir
    data_path: str | None = None  # Parquet location; None: data_dir/lake
    # The read processes of schema.read (docs/security.md): the PostgreSQL URL they open the catalog with
    # (a role with SELECT on the catalog schema; None: database_url), the memory each may use, how many.
    read_database_url: str | None = None
    read_memory_limit: str = "4GiB"
    read_processes: int = Field(default=4, ge=1)

    @field_validator("data_dir")
    @classmethod
    def _absolute_dir(cls, value: Path) -> Path:
        """Absolute from the start: read processes run in their own working directory (schema.read)."""
        return value.absolute()

    @field_validator("data_path")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        return value if value is None or "://" in value else str(Path(value).absolute())

    @classmethod
    def from_env(cls) -> StoreConfig:
        return cls(
            data_dir=Path(os.environ.get("SAEGAP_DATA", "saegap-data")),
            database_url=os.environ.get("SAEGAP_DATABASE_URL") or None,
            data_path=os.environ.get("SAEGAP_DATA_PATH") or None,
            read_database_url=os.environ.get("SAEGAP_READ_DATABASE_URL") or None,
            read_memory_limit=os.environ.get("SAEGAP_READ_MEMORY_LIMIT") or "4GiB",
            read_processes=int(os.environ.get("SAEGAP_READ_PROCESSES") or 4),
        )

    @property
    def uses_postgres(self) -> bool:
        return self.database_url is not None and make_url(self.database_url).get_backend_name() == "postgresql"

    @property
    def uses_s3(self) -> bool:
        """Parquet on S3 (or an S3-compatible server): needs DuckDB's httpfs and the AWS_* variables."""
        return self.lake_data_path().startswith("s3://")

    def job_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobs.sqlite').resolve()}"

    def lake_data_path(self) -> str:
        """Parquet directory, with the trailing slash DuckLake stores."""
        path = self.data_path or str((self.data_dir / "lake").resolve())
        return path if path.endswith("/") else path + "/"

    def sqlite_catalog_path(self) -> Path:
        """The DuckLake catalog file of a local store."""
        return (self.data_dir / "lake.sqlite").resolve()

    def lock_path(self) -> Path:
        """The OS file lock of a local store (schema.locks): held by every lake write and store open."""
        return (self.data_dir / "store.lock").resolve()

    def lake_catalog(self) -> str:
        """The DuckLake ATTACH target: a SQLite file, or the PostgreSQL database as libpq conninfo."""
        if self.database_url is None:
            return f"ducklake:sqlite:{self.sqlite_catalog_path()}"
        url = make_url(self.database_url)
        if not self.uses_postgres:
            raise ValueError(f"SAEGAP_DATABASE_URL must be a PostgreSQL URL, got backend {url.get_backend_name()!r}")
        return f"ducklake:postgres:{_libpq_conninfo(url)}"

    def reader_config(self) -> tuple[StoreConfig, str | None]:
        """What a read process opens the lake with: this config with the catalog URL (read_database_url, else
        database_url) stripped of its password, and the password apart. The read process hands it to libpq as
        PGPASSWORD, so no ATTACH string, and nothing duckdb_databases() shows, carries it."""
        if self.database_url is None:  # a local store: no credentials
            return self, None
        parsed = make_url(self.read_database_url or self.database_url)
        stripped = URL.create(
            parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
        ).render_as_string(hide_password=False)
        return self.model_copy(update={"database_url": stripped, "read_database_url": None}), parsed.password

    def catalog_label(self) -> str:
        """The lake catalog for messages: the SQLite file, or the PostgreSQL URL without its password."""
        if self.database_url is None:
            return str(self.sqlite_catalog_path())
        return f"{make_url(self.database_url).render_as_string(hide_password=True)} (schema {LAKE_METADATA_SCHEMA})"

    def prepare_local_dirs(self) -> None:
        """Create the data dir and a local Parquet dir (DuckLake does not create them)."""
        if self.database_url is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if "://" not in self.lake_data_path():
            Path(self.lake_data_path()).mkdir(parents=True, exist_ok=True)


def _libpq_conninfo(url: URL) -> str:
    parts = {"dbname": url.database, "host": url.host, "port": url.port, "user": url.username, "password": url.password}
    return " ".join(f"{key}={value}" for key, value in parts.items() if value is not None)
