"""What changed in a definition's source files since its current fit: a listing, never every document id.

Plain functions over the storage layer and the instance's partitions: the event sensor
calls them on every tick, so each stays bounded by the number of files (Parquet footers
for the new files' row counts, the fit's small per-file stats for the gone ones).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field

from cluster_assets import partitions
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.storage import Storage


@dataclass
class FileChanges:
    files: list[str]  # every source file now
    known: list[str]  # the files registered as partitions
    new_files: list[str]
    gone_files: list[str]
    unassigned: list[str] = field(default_factory=list)  # registered, but not assigned in the current fit
    new_documents: int = 0
    removed_documents: int = 0
    fit_id: str | None = None
    refit_reason: str | None = None

    @property
    def changed(self) -> int:
        return self.new_documents + self.removed_documents

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.new_files, self.gone_files, self.unassigned]).encode()).hexdigest()[:16]


def file_rows(storage: Storage, partition: str) -> int:
    cid, name = layout.split_partition(partition)
    return storage.parquet_file(*storage.collection_parts(cid), name).metadata.num_rows


def assigned_rows(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str) -> int:
    parts = layout.file_parts(spec, fit_id, partition, layout.STATS)
    if not storage.exists(*parts):
        return 0
    return int(sum(storage.read_table(*parts, columns=["count"]).column("count").to_pylist()))


def assigned_files(storage: Storage, spec: ClusterDefinition, fit_id: str) -> set[str]:
    """The files with assignments in a fit: one listing per source collection."""
    out = set()
    for cid in spec.source_collection_ids:
        for name in storage.list_dir(*layout.cluster_parts(spec, "fits", fit_id, "files", cid)):
            out.add(layout.partition_key(cid, posixpath.basename(name)))
    return out


def file_changes(instance, storage: Storage, spec: ClusterDefinition, code_version: str) -> FileChanges:
    files = partitions.current_keys(storage, spec)
    known = instance.get_dynamic_partitions(partitions.partitions_name(spec))
    known_set, files_set = set(known), set(files)
    changes = FileChanges(files=files, known=known, new_files=[f for f in files if f not in known_set],
                          gone_files=[k for k in known if k not in files_set])
    current = layout.read_current(storage, spec)
    if current is None:
        changes.refit_reason = "no complete fit yet"
        return changes
    changes.fit_id = current.fit_id
    fit_parts = layout.fit_parts(spec, current.fit_id, layout.FIT)
    fitted_with = json.loads(storage.read_bytes(*fit_parts)).get("code_version") if storage.exists(*fit_parts) else None
    if fitted_with and fitted_with != code_version:
        changes.refit_reason = "the definition changed since the current fit"
        return changes
    assigned = assigned_files(storage, spec, current.fit_id)
    changes.unassigned = [k for k in known if k in files_set and k not in assigned]
    changes.new_documents = sum(file_rows(storage, f) for f in changes.new_files + changes.unassigned)
    changes.removed_documents = sum(assigned_rows(storage, spec, current.fit_id, f) for f in changes.gone_files)
    return changes
