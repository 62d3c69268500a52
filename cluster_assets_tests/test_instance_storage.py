"""The instance storage's pools: when a second run claims the one slot between the statements of a first
run's claim (two processes at the same instant), only one of them holds it; Dagster's own storage lets both
win, which is why the shipped dagster.yaml files name cluster_assets.instance_storage. And on PostgreSQL, a
pool that another run creates while this one creates it is not an error."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db
import yaml
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._utils.concurrency import ConcurrencySlotStatus
from sqlalchemy.engine import Engine

from cluster_assets.instance_storage import RaceFreePostgresEventLogStorage, RaceFreeSqliteEventLogStorage

REPO = Path(__file__).resolve().parent.parent
POOL = "cluster_assets/blobs"


def claim_with_a_rival_in_between(first, second) -> dict[str, ConcurrencySlotStatus]:
    """``first`` claims the pool's slot; just before it writes the slot row, ``second`` claims it in full."""
    first.set_concurrency_slots(POOL, 1)
    claims: dict[str, ConcurrencySlotStatus] = {}

    def rival_claims_first(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE CONCURRENCY_SLOTS") and "run-2" not in claims:
            claims["run-2"] = ConcurrencySlotStatus.BLOCKED  # its own update passes through here too
            claims["run-2"] = second._claim_concurrency_slot(POOL, "run-2", "sample")

    db.event.listen(Engine, "before_cursor_execute", rival_claims_first)
    try:
        claims["run-1"] = first._claim_concurrency_slot(POOL, "run-1", "sample")
    finally:
        db.event.remove(Engine, "before_cursor_execute", rival_claims_first)
    return claims


def slot_holders(storage) -> list[str]:
    return [info.run_id for info in storage.get_concurrency_info(POOL).claimed_slots]


def test_dagster_s_own_sqlite_claim_lets_both_runs_hold_the_one_slot(tmp_path):
    """Why the project has its own storage. If Dagster fixes its claim, this fails: drop instance_storage."""
    claims = claim_with_a_rival_in_between(SqliteEventLogStorage(str(tmp_path)), SqliteEventLogStorage(str(tmp_path)))
    assert claims == {"run-1": ConcurrencySlotStatus.CLAIMED, "run-2": ConcurrencySlotStatus.CLAIMED}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_project_s_claim_gives_the_one_slot_to_one_run(backend, tmp_path, request):
    if backend == "sqlite":
        make = lambda: RaceFreeSqliteEventLogStorage(str(tmp_path))  # noqa: E731
    else:
        pg = request.getfixturevalue("postgres_db")
        url = f"postgresql+psycopg2://{pg['username']}@{pg['hostname']}:{pg['port']}/{pg['db_name']}"
        make = lambda: RaceFreePostgresEventLogStorage(url)  # noqa: E731
    first, second = make(), make()
    claims = claim_with_a_rival_in_between(first, second)
    assert claims == {"run-1": ConcurrencySlotStatus.BLOCKED, "run-2": ConcurrencySlotStatus.CLAIMED}
    assert slot_holders(first) == ["run-2"]

    first.free_concurrency_slot_for_step("run-2", "sample")  # the loser claims again once the slot is free
    assert first._claim_concurrency_slot(POOL, "run-1", "sample") == ConcurrencySlotStatus.CLAIMED
    assert slot_holders(second) == ["run-1"]


@pytest.mark.parametrize("config, storage_class", [
    ("dagster.yaml", "SqliteStorage"), ("deploy/dagster.yaml", "PostgresStorage")])
def test_both_shipped_instances_use_the_project_s_storage(config, storage_class, tmp_path, monkeypatch):
    storage = yaml.safe_load((REPO / config).read_text())["storage"]["custom"]
    assert (storage["module"], storage["class"]) == ("cluster_assets.instance_storage", storage_class)
    if storage_class == "SqliteStorage":
        monkeypatch.chdir(tmp_path)
        with dg.DagsterInstance.from_config(str(REPO)) as instance:
            assert isinstance(instance.event_log_storage, RaceFreeSqliteEventLogStorage)
            assert instance.event_log_storage.supports_global_concurrency_limits
            assert (tmp_path / ".cluster_assets" / "dagster" / "history" / "runs.db").is_file()


def test_a_pool_another_run_creates_at_the_same_moment_is_not_an_error_on_postgres(postgres_db, tmp_path):
    """Dagster's own storage raised InFailedSqlTransaction here: its insert failed, then its update ran in the
    aborted transaction."""
    url = (f"postgresql+psycopg2://{postgres_db['username']}@{postgres_db['hostname']}:{postgres_db['port']}/"
           f"{postgres_db['db_name']}")
    (tmp_path / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        first, second = RaceFreePostgresEventLogStorage(url), RaceFreePostgresEventLogStorage(url)
        first.register_instance(instance)
        second.register_instance(instance)
        created = []

        def rival_creates_first(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("INSERT INTO CONCURRENCY_LIMITS") and not created:
                created.append(None)
                created[0] = second.initialize_concurrency_limit_to_default(POOL)

        db.event.listen(Engine, "before_cursor_execute", rival_creates_first)
        try:
            assert first.initialize_concurrency_limit_to_default(POOL)
        finally:
            db.event.remove(Engine, "before_cursor_execute", rival_creates_first)
        assert created == [True]
        assert first.get_concurrency_info(POOL).slot_count == 1
        assert [p.limit for p in first.get_pool_limits() if p.name == POOL] == [1]


@pytest.mark.parametrize("storage_class", [SqliteEventLogStorage, RaceFreeSqliteEventLogStorage])
def test_a_file_another_process_registers_at_the_same_moment_is_not_an_error(storage_class, tmp_path):
    """Dagster's SQLite storage selects the partition keys that exist, then inserts the rest: a key another
    process inserts in between fails the insert. Ours inserts or ignores in one statement."""
    first, second = storage_class(str(tmp_path)), storage_class(str(tmp_path))
    keys = ["points/part-0.parquet", "points/part-500.parquet"]
    added = []

    def rival_adds_first(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT") and "DYNAMIC_PARTITIONS" in statement.upper() and not added:
            added.append("rival")  # before: its own insert passes through here too
            second.add_dynamic_partitions("blobs__files", keys[1:])

    db.event.listen(Engine, "before_cursor_execute", rival_adds_first)
    try:
        if storage_class is SqliteEventLogStorage:
            with pytest.raises(db.exc.IntegrityError):
                first.add_dynamic_partitions("blobs__files", keys)
            return
        first.add_dynamic_partitions("blobs__files", keys)
    finally:
        db.event.remove(Engine, "before_cursor_execute", rival_adds_first)
    assert added == ["rival"]
    assert sorted(first.get_dynamic_partitions("blobs__files")) == keys  # each key once
