"""Dagster's instance storage, without the races it has when several processes run one definition at once.

Dagster 1.13 claims a pool slot in two statements: select a free slot (``FOR UPDATE SKIP LOCKED``), then
update that slot by id with no condition. SQLite ignores ``FOR UPDATE``, and Postgres's event log
storage runs both statements in autocommit, so the lock is gone before the update. Two runs that claim
the pool's one slot at the same instant both read it free and both win: two steps of one definition
run at once (2 of 10 two-process trials on SQLite). Here the claim is one compare-and-set statement:
the update only takes a slot that is still free, and a step that loses waits and claims again, as a
step blocked by the pool does. On PostgreSQL, a pool's first use by two runs at once also failed one of
their steps; its row is upserted here. On SQLite, two processes registering the same new file as a
partition failed the second; the keys are inserted or ignored in one statement, as on PostgreSQL.

Use it as the instance's storage (``storage: custom:`` in dagster.yaml); every other table and path is
Dagster's own, so an existing instance's history stays where it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as db
from sqlalchemy.dialects.postgresql import insert as pg_insert
from dagster._core.storage.event_log.schema import (
    ConcurrencyLimitsTable,
    ConcurrencySlotsTable,
    DynamicPartitionsTable,
)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._utils.concurrency import ConcurrencySlotStatus
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config


class AtomicSlotClaim:
    """Mixin for a SQL event log storage: claim a pool slot with one compare-and-set update."""

    def _claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str) -> ConcurrencySlotStatus:
        slots = ConcurrencySlotsTable
        free_slot = (
            db.select(slots.c.id)
            .where(slots.c.concurrency_key == concurrency_key, slots.c.step_key.is_(None),
                   slots.c.deleted.is_(False))
            .order_by(slots.c.id)
            .limit(1)
            .scalar_subquery()
        )
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            claimed = conn.execute(
                slots.update()
                .values(run_id=run_id, step_key=step_key)
                .where(slots.c.id == free_slot, slots.c.step_key.is_(None))
            ).rowcount
        return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED


class RaceFreeSqliteEventLogStorage(AtomicSlotClaim, SqliteEventLogStorage):
    def add_dynamic_partitions(self, partitions_def_name: str, partition_keys: Sequence[str]) -> None:
        """One ``INSERT OR IGNORE``, as Dagster's PostgreSQL storage upserts. Dagster's SQLite storage selects the
        keys that exist, then inserts the rest: two processes adding one new file (a sensor tick in the daemon
        and `cluster-assets run`) both pass the select, and the second fails on the unique index."""
        if not partition_keys:
            return
        self._check_partitions_table()
        rows = [{"partitions_def_name": partitions_def_name, "partition": key} for key in partition_keys]
        with self.index_connection() as conn:
            conn.execute(DynamicPartitionsTable.insert().prefix_with("OR IGNORE"), rows)


class RaceFreePostgresEventLogStorage(AtomicSlotClaim, PostgresEventLogStorage):
    def initialize_concurrency_limit_to_default(self, concurrency_key: str) -> bool:
        """Dagster's, with the pool's row upserted: Dagster inserts it and, when another run has just created
        the pool, updates it after the failed insert, but on PostgreSQL the failed insert has aborted the
        transaction, so the step failed (``InFailedSqlTransaction``) the first time two runs used a pool."""
        default_limit = self._instance.global_op_concurrency_default_limit if self.has_instance else None
        if default_limit is None or not (self.has_concurrency_limits_table and self.has_default_pool_limit_col):
            return super().initialize_concurrency_limit_to_default(concurrency_key)
        self._reconcile_concurrency_limits_from_slots()
        limits = ConcurrencyLimitsTable
        upsert = pg_insert(limits).values(concurrency_key=concurrency_key, limit=default_limit,
                                          using_default_limit=True)
        with self.index_transaction() as conn:  # the row's lock holds the slot count below to one writer
            conn.execute(upsert.on_conflict_do_update(index_elements=[limits.c.concurrency_key],
                                                      set_={"limit": default_limit},
                                                      where=limits.c.limit != default_limit))
            self._allocate_concurrency_slots(conn, concurrency_key, default_limit)
        return True


class SqliteStorage(DagsterSqliteStorage):
    """``storage: sqlite:`` with the atomic slot claim; same ``base_dir`` layout as Dagster's."""

    def __init__(self, base_dir: str, inst_data=None):
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = RaceFreeSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)


class PostgresStorage(DagsterPostgresStorage):
    """``storage: postgres:`` with the atomic slot claim; takes the same config."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None,
                 token_provider=None):
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PostgresRunStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        self._event_log_storage = RaceFreePostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider)
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider)
        super(DagsterPostgresStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   token_provider=get_token_provider_from_config(config_value))
