"""``enriched_collection``: each source file, with its documents' clusters and label fields, as a file of the target.

One output file per input file (``<file name>``, or ``<source>__<file name>`` when several
sources share one target). Sources are only read; a target is written only by the definition
that owns it (``cluster_assets.ownership``); each output file is written whole (write then
rename, or one upload) so a failure leaves the previous one as it was.

A refit must not leave a target whose files mean different things by ``cluster_id``:
while the target holds another fit's files, the new fit's files are written beside them
under ``_fit-<fit_id>/`` (readers skip ``_`` names) and moved into place together once
every file of the definition has one.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import ownership
from cluster_assets.features import feature_column_names
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
STAGED = "_fit-"


def enrichment_fields(spec: ClusterDefinition, labels: pa.Table) -> list[str]:
    return [f for f in spec.enrichment.fields
            if f != "cluster_id" and (f in FIELD_TYPES or f in labels.column_names)]


def output_name(spec: ClusterDefinition, partition: str) -> str:
    cid, name = layout.split_partition(partition)
    target = spec.target_collection_ids()[cid]
    shared = sum(1 for t in spec.target_collection_ids().values() if t == target) > 1
    return f"{cid}__{name}" if shared else name


class LabelColumns:
    """The per-document label columns of a batch, built from the labels table (one row per cluster).

    String columns are dictionary arrays over the labels table's own values: a batch holds one
    index per document, never a copy of a label or summary per row. Other types (keywords, a
    bounded list: Parquet cannot write nested dictionaries) are taken.
    """

    def __init__(self, labels: pa.Table, fields: list[str]):
        self.fields = fields
        label_ids = labels.column("cluster_id").to_numpy()
        # cluster id -> label row; the extra last entry catches -1 (noise)
        self.lookup = np.full(int(label_ids.max(initial=-1)) + 2, -1, dtype=np.int64)
        self.lookup[label_ids] = np.arange(len(label_ids))
        self.values = {name: _one_chunk(labels.column(name)) for name in fields if name != "representative"}
        # Parquet cannot write a dictionary holding nulls: a null label value is a null index instead
        self.null_values = {name: np.asarray(values.is_null()) for name, values in self.values.items()}
        self.representatives = pa.array(
            sorted({i for ids in labels.column("representative_ids").to_pylist() for i in ids}), pa.string())
        # a representative is a (collection, document_id): ids may repeat across collections
        self.representatives_of: dict[str, pa.Array] = {}
        if "representative_collection_ids" in labels.column_names:
            by_collection: dict[str, set[str]] = {}
            for ids, cids in zip(labels.column("representative_ids").to_pylist(),
                                 labels.column("representative_collection_ids").to_pylist()):
                for i, cid in zip(ids, cids or []):
                    by_collection.setdefault(cid, set()).add(i)
            self.representatives_of = {c: pa.array(sorted(v), pa.string()) for c, v in by_collection.items()}

    def for_batch(self, clusters: np.ndarray, ids: pa.Array, collection_id: str | None = None) -> dict[str, pa.Array]:
        """``clusters``: each document's cluster id, -1 for noise and unassigned (their fields are null);
        ``ids``: the documents' ids as strings (for ``representative``), of ``collection_id``."""
        rows = np.where(clusters >= 0, self.lookup[np.clip(clusters, 0, len(self.lookup) - 1)], -1)
        missing = rows < 0
        indices = pa.array(rows.astype(np.int32), mask=missing)
        out: dict[str, pa.Array] = {}
        for name in self.fields:
            if name == "representative":
                chosen = self.representatives
                if collection_id is not None and self.representatives_of:
                    chosen = self.representatives_of.get(collection_id, pa.array([], pa.string()))
                out[name] = pc.is_in(ids, value_set=chosen)
                continue
            values = self.values[name]
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                nulls = self.null_values[name]
                if nulls.any():
                    out[name] = pa.DictionaryArray.from_arrays(
                        pa.array(rows.astype(np.int32), mask=missing | nulls[np.maximum(rows, 0)]),
                        values.fill_null(""))
                else:
                    out[name] = pa.DictionaryArray.from_arrays(indices, values)
            else:
                out[name] = values.take(indices)
        return out


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def carried_columns(schema: pa.Schema, spec: ClusterDefinition) -> list[str]:
    """The source columns copied into the target: ``enrichment.columns``, else all but the feature vectors."""
    if spec.enrichment.columns is not None:
        return [ID] + [c for c in spec.enrichment.columns if c != ID]
    vectors = feature_column_names(spec.feature_addresses)
    return [c for c in schema.names if c not in vectors]


def enrich_file(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str, label_columns: LabelColumns,
                destination: tuple[str, ...], classifier=None, plan=None) -> tuple[int, int, dict[str, int]]:
    """Write one enriched file; returns (documents, documents without an assignment, taxonomy counts).
    ``classifier`` (a taxonomy's) classifies each document's vectors, read by the fit's feature ``plan``."""
    cid, name = layout.split_partition(partition)
    assigned = read_assignments(storage, spec, fit_id, partition)
    index = pd.Index(assigned.column(ID).to_numpy(zero_copy_only=False))
    cluster_of = assigned.column("cluster_id").to_numpy()
    source = storage.open_file(cid, name)
    schema = source.schema_arrow
    columns = carried_columns(schema, spec)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ValueError(f"enrichment.columns: collection {cid!r}, file {name} has no column {missing[0]!r}")
    matrices = None
    if classifier is not None:
        matrices = (X for _, X in file_batches(storage, spec, plan, partition))
    unassigned = 0
    taxonomy_counts = {"assigned": 0, "unassigned": 0}

    def batches():
        nonlocal unassigned
        for batch in storage.iter_file(cid, name, columns, BATCH, opened=source):
            table = pa.Table.from_batches([batch])
            if spec.multiple_sources_per_target(cid):
                table = _set(table, "source_collection_id", pa.array([cid] * len(table), pa.string()))
            ids = table.column(ID).cast(pa.string())
            rows = index.get_indexer(ids.to_numpy(zero_copy_only=False))
            found = rows >= 0
            unassigned += int((~found).sum())
            clusters = np.where(found, cluster_of[np.clip(rows, 0, None)], -1)
            # a document the assignments do not know has a null cluster_id, not noise
            table = _set(table, "cluster_id", pa.array(clusters.astype(np.int32), mask=~found))
            for column_name, values in label_columns.for_batch(clusters, ids.combine_chunks(), cid).items():
                table = _set(table, column_name, values)
            if matrices is not None:
                from cluster_assets.taxonomy import DocumentClasses

                classes = DocumentClasses(classifier, [next(matrices)])
                taxonomy_counts["assigned"] += int((classes.index >= 0).sum())
                taxonomy_counts["unassigned"] += int((classes.index < 0).sum())
                for column_name, values in classes.columns(np.arange(len(table)), np.ones(len(table), bool)).items():
                    table = _set(table, column_name, values)
            yield table

    iterator = batches()
    first = next(iterator, None)
    if first is None:
        return 0, 0, taxonomy_counts

    def all_batches():
        yield first
        yield from iterator

    rows = storage.write_batches(first.schema, all_batches(), *destination)
    return rows, unassigned, taxonomy_counts


def enrich_into(storage: Storage, spec: ClusterDefinition, fit_id: str, partition: str, label_columns: LabelColumns,
                folder: tuple[str, ...], classifier=None, plan=None) -> tuple[int, int, dict[str, int]]:
    """``enrich_file`` into ``folder`` under the file's output name: the per-file unit an engine runs."""
    return enrich_file(storage, spec, fit_id, partition, label_columns, (*folder, output_name(spec, partition)),
                       classifier, plan)


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
        classifier = plan = None
        if spec.taxonomy:
            from cluster_assets.taxonomy import Classifier, load_taxonomy

            classifier = Classifier(load_taxonomy(storage, spec.taxonomy.name), spec.taxonomy.similarity_threshold)
            record = layout.read_fit_record(storage, spec, fit_id)  # the fit's feature plan: once, not per file
            if "sample_id" not in record:
                raise LineageError(f"{storage.uri(*layout.fit_parts(spec, fit_id, layout.FIT))} is missing: "
                                   f"materialize {spec.cluster_name}/model again")
            plan = load_plan(storage, spec, record["sample_id"])
        targets = spec.target_collection_ids()
        written: dict[str, int] = {}
        unassigned = 0
        taxonomy_counts = {"assigned": 0, "unassigned": 0}
        pending: list[str] = []
        mine = {t: [p for p in ctx.partitions if targets[layout.split_partition(p)[0]] == t]
                for t in dict.fromkeys(targets.values())}
        # every target is checked before anything is written: a refused one stops the run whole
        owners = {t: ownership.check_target(storage, t, spec.cluster_name, ctx.previously_enriched)
                  for t, parts in mine.items() if parts}
        for target, owner in owners.items():
            in_place = not owner.files or owner.fit_id == fit_id
            folder = ("collections", target) if in_place else ("collections", target, f"{STAGED}{fit_id}")
            outputs = {output_name(spec, p): p for p in mine[target]}
            if in_place:  # the manifest names a file before it is written, so a kill leaves nothing unowned
                owner = ownership.Owner(spec.cluster_name, tuple(set(owner.files) | set(outputs)), fit_id)
            ownership.claim(storage, target, owner)
            done = ctx.engine.map(enrich_into, storage, spec, fit_id, mine[target], label_columns=label_columns,
                                  folder=folder, classifier=classifier, plan=plan)
            for partition, (rows, missing, classified) in zip(mine[target], done):
                out = output_name(spec, partition)
                for key in taxonomy_counts:
                    taxonomy_counts[key] += classified[key]
                written[target] = written.get(target, 0) + rows
                unassigned += missing
                result.per_partition[partition] = {"file_documents": rows, "dagster/row_count": rows,
                                                   "enriched_file": storage.uri("collections", target, out)}
            if not in_place and not publish_if_complete(storage, spec, target, fit_id,
                                                        ctx.all_partitions or ctx.partitions):
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
    if classifier is not None:
        result.metadata.update({
            "taxonomy": classifier.name,
            "taxonomy_assigned_documents": taxonomy_counts["assigned"],
            "taxonomy_unassigned_documents": taxonomy_counts["unassigned"],
            "taxonomy_similarity_threshold": classifier.threshold,
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
    wanted = [output_name(spec, p) for p in all_partitions if targets[layout.split_partition(p)[0]] == target]
    staged_dir = ("collections", target, f"{STAGED}{fit_id}")
    if not set(wanted) <= set(storage.list_dir(*staged_dir)):
        return False
    before = ownership.read_owner(storage, target)
    ownership.claim(storage, target, ownership.Owner(spec.cluster_name, tuple(set(before.files) | set(wanted)),
                                                     before.fit_id))
    for out in wanted:
        storage.fs.move(storage.path(*staged_dir, out), storage.path("collections", target, out))
    for out in set(before.files) - set(wanted):  # files of sources that are gone; never a file not ours
        _delete(storage, "collections", target, out)
    ownership.claim(storage, target, ownership.Owner(spec.cluster_name, tuple(wanted), fit_id))
    storage.fs.delete_dir(storage.path(*staged_dir))
    return True


def _delete(storage: Storage, *parts: str) -> None:
    if storage.exists(*parts):
        storage.fs.delete_file(storage.path(*parts))


def remove_outputs(storage: Storage, spec: ClusterDefinition, partitions: list[str]) -> list[str]:
    """Delete the enriched files of source files that are gone (only files this definition owns)."""
    removed = []
    targets = spec.target_collection_ids()
    for target in dict.fromkeys(targets.values()):
        owner = ownership.read_owner(storage, target)
        if owner is None or owner.cluster_name != spec.cluster_name:
            continue
        gone = {output_name(spec, p) for p in partitions if targets.get(layout.split_partition(p)[0]) == target}
        gone &= set(owner.files)
        for out in gone:
            _delete(storage, "collections", target, out)
            removed.append(storage.uri("collections", target, out))
        if gone:
            ownership.claim(storage, target, ownership.Owner(owner.cluster_name, tuple(set(owner.files) - gone),
                                                             owner.fit_id))
    return removed
