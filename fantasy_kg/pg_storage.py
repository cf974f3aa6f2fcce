"""Dagster's PostgreSQL storage, holding a few connections per process instead of none.

``dagster-postgres`` opens a new database connection for every query outside the webserver
(SQLAlchemy ``NullPool``). A fantasy_kg run makes ~220 queries (its events, checks and pool
claims) and the daemon ~130 more per run, so on a busy instance the server spends more CPU
forking connection backends than answering (measured in docs/deploy.md, about 4 ms of CPU per
connection against 0.2 ms for a pooled query). Dagster offers no setting for it yet
(dagster#33935, its pull request #33936 is open); this class is ``DagsterPostgresStorage`` with
each of its three engines replaced by a small pool, selected in ``deploy/postgres/dagster.yaml``::

    storage:
      custom:
        module: fantasy_kg.pg_storage
        class: PooledPostgresStorage
        config:
          postgres_url: {env: FANTASY_KG_DAGSTER_PG_URL}
          pool_size: 1        # connections each storage keeps per process
          max_overflow: 4     # more, opened while threads need them, closed after

A process then holds at most ``3 * pool_size`` idle connections (run, event log and schedule
storage). Connections are checked with a ping before use, so a restarted server or a proxy that
dropped an idle connection costs one reconnect, not a failed run. Behind PgBouncer in
transaction mode use Dagster's own ``postgres`` storage instead: a pool that holds sessions
defeats it. The webserver swaps in its own pool of one connection per storage (Dagster's
``optimize_for_webserver``); the replaced pool's idle connections close when it is collected.
"""

from collections.abc import Mapping
from typing import Any

from dagster import Field, IntSource
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_config,
    pg_url_from_config,
)
from sqlalchemy.engine import Engine

DEFAULT_POOL_SIZE = 1
DEFAULT_MAX_OVERFLOW = 4
DEFAULT_POOL_RECYCLE_SECONDS = 3600


class PooledPostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` whose three storages each keep a small pool per process.

    Args:
        postgres_url: As for ``DagsterPostgresStorage``.
        should_autocreate_tables: As for ``DagsterPostgresStorage``.
        inst_data: Dagster's record of the config this storage was made from.
        token_provider: As for ``DagsterPostgresStorage`` (cloud identity auth).
        pool_size: Connections each storage keeps open between queries.
        max_overflow: Extra connections a storage may open at once, closed when returned.
        pool_recycle: Seconds after which a kept connection is replaced (idle timeouts).
    """

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        pool_recycle: int = DEFAULT_POOL_RECYCLE_SECONDS,
    ) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            unpooled: Engine = storage._engine
            storage._engine = create_pg_engine(
                postgres_url,
                token_provider,
                isolation_level="AUTOCOMMIT",
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=pool_recycle,
                pool_pre_ping=True,
            )
            unpooled.dispose()  # a NullPool engine holds nothing; this only drops the object

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """Dagster's PostgreSQL storage config plus the pool's three settings."""
        base = pg_config()
        assert isinstance(base, dict)
        return {
            **base,
            "pool_size": Field(IntSource, is_required=False, default_value=DEFAULT_POOL_SIZE),
            "max_overflow": Field(IntSource, is_required=False, default_value=DEFAULT_MAX_OVERFLOW),
            "pool_recycle": Field(
                IntSource, is_required=False, default_value=DEFAULT_POOL_RECYCLE_SECONDS
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PooledPostgresStorage":
        """Build the storage from its ``dagster.yaml`` block (Dagster calls this)."""
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
            pool_size=int(config_value.get("pool_size", DEFAULT_POOL_SIZE)),
            max_overflow=int(config_value.get("max_overflow", DEFAULT_MAX_OVERFLOW)),
            pool_recycle=int(config_value.get("pool_recycle", DEFAULT_POOL_RECYCLE_SECONDS)),
        )
