"""One Dagster partition per source file: ``<collection_id>/<file name>``, per definition.

The per-file stages are partitioned by a ``DynamicPartitionsDefinition`` whose keys follow
the source folders: ``sync_partitions`` adds the new files and removes the gone ones (and
their enriched outputs). A full run covers every key as one range, so it is one Dagster run.
"""

from __future__ import annotations

import dagster as dg

from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages.enrich import remove_outputs
from cluster_assets.stages.sample import source_files
from cluster_assets.storage import CollectionError, Storage

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# Dagster refuses these in partition keys ("..." separates a range on the command line).
FORBIDDEN = ("...", ",", "[", "]", "\n", "\r", "\t", "\0")


def partitions_name(spec: ClusterDefinition) -> str:
    return f"{spec.group_name}__files"


def files_partitions(spec: ClusterDefinition) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=partitions_name(spec))


def check_partition_key(key: str) -> str:
    bad = next((s for s in FORBIDDEN if s in key), None)
    if bad is not None:
        raise CollectionError(f"file {key.split('/', 1)[-1]!r} of collection {key.split('/')[0]!r}: Dagster cannot "
                              f"take {bad!r} in a partition key; rename the file")
    return key


def current_keys(storage: Storage, spec: ClusterDefinition) -> list[str]:
    return [check_partition_key(k) for k in source_files(storage, spec)]


def sync_partitions(instance: dg.DagsterInstance, storage: Storage, spec: ClusterDefinition) -> tuple[list[str], list[str], list[str]]:
    """Register new files, forget gone ones (removing their enriched files); returns (keys, added, removed)."""
    name = partitions_name(spec)
    keys = current_keys(storage, spec)
    known = instance.get_dynamic_partitions(name)
    known_set, key_set = set(known), set(keys)  # thousands of files: one set each, not one per key
    added = [k for k in keys if k not in known_set]
    removed = [k for k in known if k not in key_set]
    if added:
        add_partitions(instance, name, added)
    for key in removed:
        instance.delete_dynamic_partition(name, key)
    if removed:
        remove_outputs(storage, spec, removed)
    return instance.get_dynamic_partitions(name), added, removed


def add_partitions(instance: dg.DagsterInstance, name: str, keys: list[str], attempts: int = 5) -> None:
    """Register ``keys`` even while another process registers some of them: Dagster's SQLite storage reads which
    keys exist and then inserts the rest, so two runs started at once over the same new files can both insert
    one key and the second fails on the table's unique index. Re-read and add what is still missing. (The
    shipped instances' storage, ``cluster_assets.instance_storage``, inserts or ignores; this keeps an instance
    on Dagster's own storage safe too.)"""
    from sqlalchemy.exc import IntegrityError

    for attempt in range(attempts):
        try:
            instance.add_dynamic_partitions(name, keys)
            return
        except IntegrityError:
            known = set(instance.get_dynamic_partitions(name))
            keys = [k for k in keys if k not in known]
            if not keys:
                return
            if attempt == attempts - 1:
                raise


def range_tags(keys: list[str]) -> dict[str, str]:
    """Run tags that make one run cover ``keys`` (consecutive in the partitions' order)."""
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}
