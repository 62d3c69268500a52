"""``assignments``: every document of each file gets its cluster from the fit (-1 = noise).

Per file: the feature columns are read straight from the source file, validated as they
stream, and predicted by the fit; beside the assignments go the file's per-cluster sums
(``stats``), from which ``labels`` computes centroids and cohesion over every document; once
the fit has centroids, the stats file's footer also holds the file's ``quality.Readout`` against
them, all the event sensor's drift check reads of a new file.
The source file's size and mtime are kept in the output, so later stages can tell that
the file changed since it was assigned.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cluster_assets import quality
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.stages.embed import file_batches, load_plan
from cluster_assets.stages.model import load_fit
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID
from cluster_assets.storage import CollectionError, Storage

SCHEMA = pa.schema([(ID, pa.string()), ("cluster_id", pa.int32())])
SOURCE_META = b"cluster_assets.source_file"
# in the stats file's footer: the file's ``quality.Readout`` against the fit's centroids, so the event sensor's
# drift check sums a few numbers per file instead of reading every file's per-cluster vectors
READOUT_META = b"cluster_assets.readout"


@dataclass(frozen=True)
class FitCentroids:
    """The fit's centroids (``labels`` writes them), by cluster id, and a digest of them."""

    by_id: dict[int, np.ndarray]
    digest: str


def read_centroids(storage: Storage, spec: ClusterDefinition, fit_id: str) -> FitCentroids | None:
    """None before the fit's labels are written (its own full run assigns its files first)."""
    parts = layout.fit_parts(spec, fit_id, layout.CLUSTERS)
    if not storage.exists(*parts):
        return None
    clusters = storage.read_table(*parts, columns=["cluster_id", "centroid"])
    dim = clusters.schema.field("centroid").type.list_size
    matrix = clusters.column("centroid").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    ids = clusters.column("cluster_id").to_numpy().astype(np.int64)
    digest = hashlib.sha256(ids.tobytes() + np.ascontiguousarray(matrix).tobytes()).hexdigest()[:16]
    return FitCentroids({int(c): matrix[i] for i, c in enumerate(ids)}, digest)


def readout_metadata(stats: quality.ClusterStats, centroids: FitCentroids) -> bytes:
    return json.dumps({**quality.Readout.of(stats, centroids.by_id).to_json(), "centroids": centroids.digest}).encode()


def recorded_readout(metadata: dict[bytes, bytes], centroids: FitCentroids) -> quality.Readout | None:
    """The readout a stats footer recorded, if it has one, whole, taken against these centroids (else None:
    the caller reads the file's stats in full)."""
    raw = metadata.get(READOUT_META)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return quality.Readout.from_json(value) if value.get("centroids") == centroids.digest else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def file_fingerprint(storage: Storage, partition: str) -> dict:
    return storage.file_fingerprint(storage.file_info(*layout.split_partition(partition)))


def check_unchanged(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str) -> dict:
    """The file's fingerprint when it was assigned; a file changed since then is refused."""
    parts = layout.file_parts(spec, fit_id, partition, layout.ASSIGNMENTS)
    if not storage.exists(*parts):
        raise LineageError(f"file {partition} has no assignments in fit {fit_id} of {spec.cluster_name!r}: "
                           f"materialize {spec.cluster_name}/assignments for partition {partition!r}")
    meta = storage.parquet_file(*parts).schema_arrow.metadata or {}
    recorded = json.loads(meta.get(SOURCE_META, b"{}"))
    now = file_fingerprint(storage, partition)
    if recorded and recorded != now:
        raise CollectionError(
            f"collection {partition.split('/')[0]!r}, file {partition.split('/', 1)[1]} changed since it was assigned "
            f"(size {recorded.get('size')} -> {now['size']}): materialize {spec.cluster_name}/assignments for "
            f"partition {partition!r} again")
    return now


def read_assignments(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str) -> pa.Table:
    check_unchanged(storage, spec, fit_id, partition)
    return storage.read_table(*layout.file_parts(spec, fit_id, partition, layout.ASSIGNMENTS))


def assign_file(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str,
                centroids: FitCentroids | None = None) -> tuple[int, quality.ClusterStats, dict]:
    """Assign one file; returns its document count, per-cluster stats (also written beside it), fingerprint.
    ``centroids``: the fit's (``read_centroids``, read once by the stage), for the stats footer's readout.

    The fingerprint also carries ``noise_before_reassignment`` (the noise count before outlier reassignment).
    """
    fit = load_fit(storage, spec, fit_id)
    plan = load_plan(storage, spec, fit.sample_id)
    fingerprint = file_fingerprint(storage, partition)
    stats = quality.ClusterStats()
    schema = SCHEMA.with_metadata({SOURCE_META: json.dumps(fingerprint).encode()})
    noise_before = 0

    def batches():
        nonlocal noise_before
        for ids, X in file_batches(storage, spec, plan, partition):
            labels, noise = fit.assign(X)
            noise_before += noise
            stats.update(X, labels)
            yield pa.table({ID: ids, "cluster_id": pa.array(labels.astype(np.int32))}, schema=schema)

    rows = storage.write_batches(schema, batches(), *layout.file_parts(spec, fit_id, partition, layout.ASSIGNMENTS))
    table = stats_table(stats, noise_before, centroids)
    storage.write_table(table, *layout.file_parts(spec, fit_id, partition, layout.STATS))
    return rows, stats, {**fingerprint, NOISE_BEFORE: noise_before}


NOISE_BEFORE = "noise_before_reassignment"


def stats_table(stats: quality.ClusterStats, noise_before: int, centroids: FitCentroids | None) -> pa.Table:
    """A file's stats as written: one row per cluster; the noise before reassignment and, once the fit has
    centroids, the file's readout against them in the footer."""
    table = stats.to_table()
    meta = {**(table.schema.metadata or {}), NOISE_BEFORE.encode(): str(noise_before).encode()}
    if centroids is not None:
        meta[READOUT_META] = readout_metadata(stats, centroids)
    return table.replace_schema_metadata(meta)


def run_assignments(ctx: StageContext) -> StageResult:
    storage, spec = ctx.storage, ctx.spec
    fit_id = ctx.need_fit()
    result = StageResult()
    total = quality.ClusterStats()
    per_file: dict[str, int] = {}
    noise_before = 0
    with timed(result, "duration_s"):
        done = ctx.engine.map(assign_file, storage, spec, fit_id, ctx.partitions,
                              centroids=read_centroids(storage, spec, fit_id))
        for partition, (rows, stats, fingerprint) in zip(ctx.partitions, done):
            noise_before += fingerprint.pop(NOISE_BEFORE, 0)
            total.merge(stats)
            per_file[partition] = rows
            result.per_partition[partition] = {
                layout.SOURCE_FILES_KEY: {partition: fingerprint},
                "file_documents": rows,
                "file_noise_documents": stats.counts.get(-1, 0),
                "dagster/row_count": rows,
            }
    documents = sum(per_file.values())
    noise = total.counts.get(-1, 0)
    sizes = sorted((total.counts[c] for c in total.cluster_ids()), reverse=True)
    result.row_count = documents
    result.uri = storage.uri(*layout.fit_parts(spec, fit_id, "files"))
    result.metadata.update({
        layout.FIT_ID_KEY: fit_id,
        "documents": documents,
        "files": len(per_file),
        "num_clusters": len(sizes),
        "noise_documents": noise,
        "noise_share": round(noise / documents, 4) if documents else 0.0,
        "noise_share_before_reassignment": round(noise_before / documents, 4) if documents else 0.0,
        "largest_cluster": sizes[0] if sizes else 0,
        "smallest_cluster": sizes[-1] if sizes else 0,
        **ctx.engine.describe(),
    })
    if documents and not sizes:
        result.warnings.append("every document is noise: loosen the algorithm's parameters")
    return result
