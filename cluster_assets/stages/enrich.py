"""``enriched_collection``: each source file, with its documents' clusters and label fields, as a file of the target.

One output file per input file (``<file name>``, or ``<source>__<file name>`` when several
sources share one target). Sources are only read; each output file is written whole
(write then rename, or one upload) so a failure leaves the previous one as it was.

A refit must not leave a target whose files mean different things by ``cluster_id``:
while the target holds another fit's files, the new fit's files are written beside them
under ``_fit-<fit_id>/`` (readers skip ``_`` names) and moved into place together once
every file of the definition has one.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets.features import parse_address
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.assign import read_assignments
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.stages.embed import BATCH, file_batches, load_plan
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID
from cluster_assets.storage import Storage

FIELD_TYPES = {
    "cluster_id": pa.int32(),
    "label": pa.string(),
    "summary": pa.string(),
    "keywords": pa.list_(pa.string()),
    "confidence": pa.float32(),
    "representative": pa.bool_(),
}
MANIFEST = "_cluster_assets.json"
STAGED = "_fit-"


def enrichment_fields(spec: ClusterDefinition, labels: pa.Table) -> list[str]:
    return [f for f in spec.enrichment.fields
            if f != "cluster_id" and (f in FIELD_TYPES or f in labels.column_names)]


def output_name(spec: ClusterDefinition, partition: str) -> str:
    cid, name = layout.split_partition(partition)
    target = spec.target_collection_ids()[cid]
    shared = sum(1 for t in spec.target_collection_ids().values() if t == target) > 1
    return f"{cid}__{name}" if shared else name


def read_manifest(storage: Storage, target: str) -> dict:
    parts = ("collections", target, MANIFEST)
    return json.loads(storage.read_bytes(*parts)) if storage.exists(*parts) else {}


def write_manifest(storage: Storage, target: str, manifest: dict) -> None:
    storage.write_bytes(json.dumps(manifest, sort_keys=True).encode(), "collections", target, MANIFEST)


class LabelColumns:
    """The fit's label fields for any documents, as dictionary-encoded columns: no per-row copy of a label."""

    def __init__(self, labels: pa.Table, fields: list[str]):
        self.labels = labels
        self.fields = fields
        ids = labels.column("cluster_id").to_numpy()
        self.lookup = np.full(int(ids.max(initial=-1)) + 2, -1, dtype=np.int32)  # cluster id -> label row
        self.lookup[ids] = np.arange(len(ids), dtype=np.int32)
        self.representatives = pa.array(
            sorted({i for row in labels.column("representative_ids").to_pylist() for i in row}), pa.string())

    def columns(self, ids: pa.Array, clusters: np.ndarray, found: np.ndarray) -> dict[str, pa.Array]:
        inside = (clusters >= 0) & (clusters < len(self.lookup) - 1)
        rows = np.where(inside, self.lookup[np.clip(clusters, 0, len(self.lookup) - 2)], -1)
        out = {"cluster_id": pa.array(clusters.astype(np.int32), mask=~found)}
        indices = pa.array(rows, pa.int32(), mask=rows < 0)
        for name in self.fields:
            if name == "representative":
                out[name] = pc.is_in(ids, value_set=self.representatives)
            else:
                values = self.labels.column(name).combine_chunks()
                # strings (labels, summaries) as dictionaries: one copy per cluster, not per document;
                # Parquet cannot write nested dictionaries, so lists (keywords, bounded) are taken
                dictionary = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
                out[name] = pa.DictionaryArray.from_arrays(indices, values) if dictionary else values.take(indices)
        return out


def carried_columns(schema: pa.Schema, spec: ClusterDefinition) -> list[str]:
    """The source columns copied into the target: ``enrichment.columns``, else all but the feature vectors."""
    if spec.enrichment.columns is not None:
        return [ID] + [c for c in spec.enrichment.columns if c != ID]
    vectors = {parse_address(a) for a in spec.feature_addresses}
    return [c for c in schema.names if c not in vectors]


def enrich_file(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str, label_columns: LabelColumns,
                destination: tuple[str, ...], classifier=None) -> tuple[int, int]:
    """Write one enriched file; returns (documents, documents without an assignment)."""
    cid, name = layout.split_partition(partition)
    assigned = read_assignments(storage, spec, fit_id, partition)
    index = pd.Index(assigned.column(ID).to_numpy(zero_copy_only=False))
    cluster_of = assigned.column("cluster_id").to_numpy()
    schema = storage.parquet_file(*storage.collection_parts(cid), name).schema_arrow
    columns = carried_columns(schema, spec)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ValueError(f"enrichment.columns: collection {cid!r}, file {name} has no column {missing[0]!r}")
    matrices = None
    if classifier is not None:
        plan = load_plan(storage, spec, _sample_of(storage, spec, fit_id))
        matrices = (X for _, X in file_batches(storage, spec, plan, partition))
    unassigned = 0

    def batches():
        nonlocal unassigned
        for batch in storage.iter_file(cid, name, columns, BATCH):
            table = pa.Table.from_batches([batch])
            if spec.multiple_sources_per_target(cid):
                table = _set(table, "source_collection_id", pa.array([cid] * len(table), pa.string()))
            ids = table.column(ID).cast(pa.string())
            rows = index.get_indexer(ids.to_numpy(zero_copy_only=False))
            found = rows >= 0
            unassigned += int((~found).sum())
            clusters = np.where(found, cluster_of[np.clip(rows, 0, None)], -1)
            for column_name, values in label_columns.columns(ids.combine_chunks(), clusters, found).items():
                table = _set(table, column_name, values)
            if matrices is not None:
                from cluster_assets.taxonomy import DocumentClasses

                classes = DocumentClasses(classifier, [next(matrices)])
                for column_name, values in classes.columns(np.arange(len(table)), np.ones(len(table), bool)).items():
                    table = _set(table, column_name, values)
            yield table

    iterator = batches()
    first = next(iterator, None)
    if first is None:
        return 0, 0

    def all_batches():
        yield first
        yield from iterator

    rows = storage.write_batches(first.schema, all_batches(), *destination)
    return rows, unassigned


def enrich_into(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str, label_columns: LabelColumns,
                folder: tuple[str, ...], classifier=None) -> tuple[int, int]:
    """``enrich_file`` into ``folder`` under the file's output name: the per-file unit an engine runs."""
    return enrich_file(storage, spec, fit_id, partition, label_columns, (*folder, output_name(spec, partition)),
                       classifier)


def _sample_of(storage: Storage, spec: ClusterDefinition, fit_id: str) -> str:
    return json.loads(storage.read_bytes(*layout.fit_parts(spec, fit_id, layout.FIT)))["sample_id"]


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def run_enrichment(ctx: StageContext) -> StageResult:
    storage, spec = ctx.storage, ctx.spec
    fit_id = ctx.need_fit()
    result = StageResult()
    labels_parts = layout.fit_parts(spec, fit_id, layout.LABELS)
    if not storage.exists(*labels_parts):
        raise LineageError(f"fit {fit_id} of {spec.cluster_name!r} has no labels: materialize "
                           f"{spec.cluster_name}/labels first")
    with timed(result, "duration_s"):
        labels = storage.read_table(*labels_parts)
        fields = enrichment_fields(spec, labels)
        label_columns = LabelColumns(labels, fields)
        classifier = None
        if spec.taxonomy:
            from cluster_assets.taxonomy import Classifier, load_taxonomy

            classifier = Classifier(load_taxonomy(storage, spec.taxonomy.name), spec.taxonomy.similarity_threshold)
        targets = spec.target_collection_ids()
        written: dict[str, int] = {}
        unassigned = 0
        pending: list[str] = []
        for target in dict.fromkeys(targets.values()):
            mine = [p for p in ctx.partitions if targets[layout.split_partition(p)[0]] == target]
            if not mine:
                continue
            manifest = read_manifest(storage, target)
            in_place = not manifest.get("files") or manifest.get("fit_id") == fit_id
            folder = ("collections", target) if in_place else ("collections", target, f"{STAGED}{fit_id}")
            files = dict(manifest.get("files", {})) if in_place else {}
            done = ctx.engine.map(enrich_into, storage, spec, fit_id, mine, label_columns=label_columns,
                                  folder=folder, classifier=classifier)
            for partition, (rows, missing) in zip(mine, done):
                out = output_name(spec, partition)
                written[target] = written.get(target, 0) + rows
                unassigned += missing
                files[out] = partition
                result.per_partition[partition] = {"file_documents": rows, "dagster/row_count": rows,
                                                   "enriched_file": storage.uri("collections", target, out)}
            if in_place:
                write_manifest(storage, target, {**manifest, "owner": spec.cluster_name, "fit_id": fit_id,
                                                 "files": files})
            elif not publish_if_complete(storage, spec, target, fit_id, ctx.all_partitions or ctx.partitions):
                pending.append(target)
    result.row_count = sum(written.values())
    result.uri = storage.uri("collections", next(iter(written))) if written else None
    result.metadata.update({
        layout.FIT_ID_KEY: fit_id,
        "documents": result.row_count,
        "files": len(ctx.partitions),
        "target_collections": {t: storage.uri("collections", t) for t in written},
        "fields": ["cluster_id", *fields],
        "unassigned_documents": unassigned,
        **ctx.engine.describe(),
    })
    if pending:
        result.warnings.append(f"{', '.join(pending)} still hold an earlier fit's files: the new fit's files are "
                               f"staged and replace them together once every file of the definition is enriched")
        result.metadata["staged_targets"] = pending
    if unassigned:
        result.warnings.append(f"{unassigned} documents have no assignment: their cluster_id is null")
    return result


def publish_if_complete(storage: Storage, spec: ClusterDefinition, target: str, fit_id: str,
                        all_partitions: list[str]) -> bool:
    """Move a fit's staged files into the target together once every file of the definition has one."""
    targets = spec.target_collection_ids()
    wanted = {output_name(spec, p): p for p in all_partitions if targets[layout.split_partition(p)[0]] == target}
    staged_dir = ("collections", target, f"{STAGED}{fit_id}")
    if not set(wanted) <= set(storage.list_dir(*staged_dir)):
        return False
    manifest = read_manifest(storage, target)
    for out in wanted:
        storage.fs.move(storage.path(*staged_dir, out), storage.path("collections", target, out))
    for out in set(manifest.get("files", {})) - set(wanted):
        storage.fs.delete_file(storage.path("collections", target, out))
    write_manifest(storage, target, {**manifest, "owner": spec.cluster_name, "fit_id": fit_id, "files": wanted})
    storage.fs.delete_dir(storage.path(*staged_dir))
    return True


def remove_outputs(storage: Storage, spec: ClusterDefinition, partitions: list[str]) -> list[str]:
    """Delete the enriched files of source files that are gone; returns their URIs."""
    removed = []
    targets = spec.target_collection_ids()
    for target in dict.fromkeys(targets.values()):
        manifest = read_manifest(storage, target)
        files = manifest.get("files", {})
        gone = [out for out, p in files.items() if p in partitions]
        for out in gone:
            path = storage.path("collections", target, out)
            if storage.fs.get_file_info(path).size is not None:
                storage.fs.delete_file(path)
            removed.append(storage.uri("collections", target, out))
            del files[out]
        if gone:
            write_manifest(storage, target, manifest)
    return removed
