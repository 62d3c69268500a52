"""What changed in a definition's source files since its current fit: a listing, never every document id.

Plain functions over the storage layer and the instance's partitions: the event sensor calls
them on every tick, so each stays bounded by the number of files (Parquet footers for the
new and rewritten files' row counts and the new files' drift readouts, the fit's small per-file stats
for the gone ones).
A ``Snapshot`` holds what one tick can see without opening a file (the listings, the registered
partitions, the current fit); when its digest equals the one of a tick that found nothing to
do, nothing can have changed, and the sensor skips without reading the assignments' footers.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field

from cluster_assets import partitions
from cluster_assets.quality import ClusterStats, Readout
from cluster_assets.spec import ClusterDefinition
from cluster_assets.spec.versions import fit_version, whole_version
from cluster_assets.stages import layout
from cluster_assets.stages.assign import SOURCE_META, FitCentroids, read_centroids, recorded_readout
from cluster_assets.stages.sample import source_files
from cluster_assets.storage import CollectionError, Storage


@dataclass
class FileChanges:
    files: dict[str, dict]  # every source file now, with its size and mtime
    known: list[str]  # the files registered as partitions
    new_files: list[str]
    gone_files: list[str]
    changed_files: list[str] = field(default_factory=list)  # rewritten since the current fit assigned them
    unassigned: list[str] = field(default_factory=list)  # registered, but not assigned in the current fit
    new_documents: int = 0
    removed_documents: int = 0
    fit_id: str | None = None
    refit_reason: str | None = None

    @property
    def changed(self) -> int:
        return self.new_documents + self.removed_documents

    @property
    def redo(self) -> list[str]:
        """Registered files whose per-file work the current fit must do (again)."""
        return self.unassigned + self.changed_files

    @property
    def listing_digest(self) -> str:
        return _digest(self.files)

    @property
    def digest(self) -> str:
        return _digest([self.new_files, self.gone_files, {f: self.files[f] for f in self.redo}])


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def file_rows(storage: Storage, partition: str) -> int:
    """The file's row count from its Parquet footer (nothing else read); errors name the file."""
    cid, name = layout.split_partition(partition)
    try:
        return storage.parquet_file(*storage.collection_parts(cid), name).metadata.num_rows
    except (OSError, ValueError) as exc:
        raise CollectionError(f"collection {cid!r}, file {name} cannot be read: {exc}") from None


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


def assigned_fingerprint(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str) -> dict:
    parts = layout.file_parts(spec, fit_id, partition, layout.ASSIGNMENTS)
    meta = storage.parquet_file(*parts).schema_arrow.metadata or {}
    return json.loads(meta.get(SOURCE_META, b"{}"))


def file_readout(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str,
                 centroids: FitCentroids) -> Readout:
    """A file's readout: the one its stats footer recorded, else (a file assigned before readouts were recorded,
    or against other centroids) from its full per-cluster stats. No stats: nothing assigned yet."""
    parts = layout.file_parts(spec, fit_id, partition, layout.STATS)
    try:
        stats_file = storage.parquet_file(*parts)  # opened once: its footer, then (no readout) its rows
        recorded = recorded_readout(stats_file.schema_arrow.metadata or {}, centroids)
        if recorded is not None:
            return recorded
        return Readout.of(ClusterStats.from_table(stats_file.read()), centroids.by_id)
    except FileNotFoundError:  # one request fewer per file than asking whether it exists first (S3)
        return Readout()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{storage.uri(*parts)} cannot be read: {exc}") from None


def files_readout(storage: Storage, spec: ClusterDefinition, fit_id: str, files: list[str],
                  centroids: FitCentroids) -> Readout:
    return sum((file_readout(storage, spec, fit_id, p, centroids) for p in files), Readout())


def new_files_drift(storage: Storage, spec: ClusterDefinition, current: layout.CurrentFit,
                    assigned: set[str]) -> str | None:
    """The drift check on files assigned since the fit: their cohesion and noise share against the fit's own.

    Reads the readout each new file's stats footer recorded (its full stats only for a file without one) and
    the fit's centroids; None when within limits or when too few new documents arrived to judge.
    """
    new = sorted(assigned - set(current.partitions))
    if not new:
        return None
    centroids = read_centroids(storage, spec, current.fit_id)
    if centroids is None:
        raise ValueError(f"{storage.uri(*layout.fit_parts(spec, current.fit_id, layout.CLUSTERS))} is missing: "
                         f"the current fit has no centroids")
    readout = files_readout(storage, spec, current.fit_id, new, centroids)
    documents, new_cohesion, new_noise = readout.documents, readout.cohesion, readout.noise_share
    if documents < spec.checks.new_files_min_documents:
        return None
    if current.cohesion is not None and current.noise_share is not None:  # recorded when the fit became current
        fit_cohesion, fit_noise = current.cohesion, current.noise_share
    else:  # a pointer written before the readout was recorded: every file's stats of the fit
        fit = files_readout(storage, spec, current.fit_id, current.partitions, centroids)
        fit_cohesion, fit_noise = fit.cohesion, fit.noise_share
    if new_cohesion < fit_cohesion - spec.checks.new_files_max_cohesion_drop:
        return (f"the {documents} documents assigned since the fit lie farther from their centroids "
                f"(cohesion {new_cohesion:.3f} against the fit's {fit_cohesion:.3f})")
    if new_noise > fit_noise + spec.checks.new_files_max_noise_increase:
        return f"the {documents} documents assigned since the fit are {new_noise:.0%} noise (the fit: {fit_noise:.0%})"
    return None


@dataclass
class Snapshot:
    """What a tick sees from listings alone: the source files (size, mtime), the registered partitions,
    the current fit and the files assigned in it."""

    fit_version: str  # ``spec.versions.fit_version``
    files: dict[str, dict]
    known: list[str]
    current: layout.CurrentFit | None
    assigned: set[str]
    # the whole definition's version: a tick's decision also follows what the fit does not (the trigger's
    # min_new_documents, the drift check's limits), so an edit to those is a change too
    definition_version: str = ""

    @property
    def digest(self) -> str:
        fit = [self.current.fit_id, self.current.partitions] if self.current else None
        return _digest([self.definition_version, self.files, self.known, fit, sorted(self.assigned)])


def snapshot(instance, storage: Storage, spec: ClusterDefinition) -> Snapshot:
    files = source_files(storage, spec)
    for key in files:
        partitions.check_partition_key(key)
    known = instance.get_dynamic_partitions(partitions.partitions_name(spec))
    current = layout.read_current(storage, spec)
    assigned = assigned_files(storage, spec, current.fit_id) if current else set()
    return Snapshot(fit_version(spec), files, known, current, assigned, whole_version(spec))


def file_changes(seen: Snapshot, storage: Storage, spec: ClusterDefinition) -> FileChanges:
    files, known, current = seen.files, seen.known, seen.current
    known_set = set(known)
    changes = FileChanges(files=files, known=known, new_files=[f for f in files if f not in known_set],
                          gone_files=[k for k in known if k not in files])
    if current is None:
        changes.refit_reason = "no complete fit yet"
        changes.new_documents = sum(file_rows(storage, f) for f in files)
        return changes
    changes.fit_id = current.fit_id
    fit_record = layout.read_fit_record(storage, spec, current.fit_id)
    # a fit recorded before fit versions existed is compared on its whole definition's version
    fitted_with = fit_record.get("fit_version") or fit_record.get("code_version")
    expected = seen.fit_version if "fit_version" in fit_record else whole_version(spec)
    if fitted_with and fitted_with != expected:
        changes.refit_reason = "a field the fit follows changed since the fit"
        changes.new_documents = sum(file_rows(storage, f) for f in files)
        return changes
    assigned = seen.assigned
    drift = new_files_drift(storage, spec, current, assigned & set(files))
    if drift:
        changes.refit_reason = drift
        changes.new_documents = sum(file_rows(storage, f) for f in files)
        return changes
    for key in known:
        if key not in files:
            continue
        if key not in assigned:
            changes.unassigned.append(key)
        elif assigned_fingerprint(storage, spec, current.fit_id, key) != files[key]:
            changes.changed_files.append(key)
    changes.new_documents = sum(file_rows(storage, f) for f in changes.new_files + changes.redo)
    changes.removed_documents = sum(assigned_rows(storage, spec, current.fit_id, f) for f in changes.gone_files)
    return changes
