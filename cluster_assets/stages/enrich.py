"""``enriched_collection``: every source document plus its cluster and the chosen label fields.

The source is only read. The target is written only by the definition that owns it
(``cluster_assets.ownership``), to a staging file moved into place whole, so a failure
or a kill mid-write leaves the previous target as it was.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import ownership
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.embed import BATCH, read_matrix
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID
from cluster_assets.storage import COLLECTION_FILE

FIELD_TYPES = {
    "label": pa.string(),
    "summary": pa.string(),
    "keywords": pa.list_(pa.string()),
    "confidence": pa.float32(),
    "representative": pa.bool_(),
}


def enrichment_fields(spec: ClusterDefinition, labels: pa.Table) -> list[str]:
    return [f for f in spec.enrichment.fields if f in FIELD_TYPES or f in labels.column_names]


class LabelColumns:
    """The per-document label columns of a batch, built from the labels table (one row per cluster).

    String columns are dictionary arrays over the labels table's own values: a batch holds one
    index per document, never a copy of a label or summary per row. Other types are taken.
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

    def for_batch(self, clusters: np.ndarray, ids: pa.Array) -> dict[str, pa.Array]:
        """``clusters``: each document's cluster id, -1 for noise and unassigned (their fields are null);
        ``ids``: the documents' ids as strings (for ``representative``)."""
        rows = np.where(clusters >= 0, self.lookup[np.clip(clusters, 0, len(self.lookup) - 1)], -1)
        missing = rows < 0
        indices = pa.array(rows.astype(np.int32), mask=missing)
        out: dict[str, pa.Array] = {}
        for name in self.fields:
            if name == "representative":
                out[name] = pc.is_in(ids, value_set=self.representatives)
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


def run_enrichment(storage, spec: ClusterDefinition, previous_targets: Collection[str] = ()) -> StageResult:
    """``previous_targets``: the collections this definition's last enrichment wrote; one of them that
    has no owner manifest yet (written before manifests existed) is adopted instead of refused."""
    result = StageResult()
    with timed(result, "duration_s"):
        targets = spec.target_collection_ids()
        for target in targets.values():
            if target in spec.source_collection_ids:
                raise ValueError(f"enrichment target {target!r} is a source collection: sources are never modified")
        # every target is checked before anything is written, so a refusal writes nothing
        owners = {t: ownership.check_target(storage, t, spec.cluster_name, previous_targets)
                  for t in dict.fromkeys(targets.values())}
        assigned = storage.read_table(*layout.asset_parts(spec, layout.ASSIGNMENTS))
        index = pd.Index(assigned.column(ID).to_numpy(zero_copy_only=False))
        cluster_of = assigned.column("cluster_id").to_numpy()
        labels = storage.read_table(*layout.asset_parts(spec, layout.LABELS))
        fields = enrichment_fields(spec, labels)
        label_columns = LabelColumns(labels, fields)
        taxonomy = classify_documents(storage, spec) if spec.taxonomy else None
        written: dict[str, int] = {}
        unassigned = 0
        replaced: set[str] = set()
        for target in owners:
            sources = [s for s, t in targets.items() if t == target]

            def batches():
                nonlocal unassigned
                for source in sources:
                    for batch in storage.iter_collection(source, None, BATCH):
                        table = pa.Table.from_batches([batch])
                        if len(sources) > 1:
                            table = _set(table, "source_collection_id", pa.array([source] * len(table), pa.string()))
                        ids = table.column(ID).cast(pa.string())  # ids are strings downstream, whatever the source type
                        rows = index.get_indexer(ids.to_numpy(zero_copy_only=False))
                        found = rows >= 0
                        unassigned += int((~found).sum())
                        clusters = np.where(found, cluster_of[np.clip(rows, 0, None)], -1)
                        clusters_arr = pa.array(clusters.astype(np.int32), mask=~found)
                        for name in ["cluster_id", *fields]:
                            if name in table.column_names:
                                replaced.add(name)
                        table = _set(table, "cluster_id", clusters_arr)
                        for name, values in label_columns.for_batch(clusters, ids).items():
                            table = _set(table, name, values)
                        if taxonomy is not None:
                            for name, values in taxonomy.columns(rows, found).items():
                                table = _set(table, name, values)
                        yield table

            iterator = batches()
            first = next(iterator, None)
            if first is None:
                raise ValueError(f"collection {', '.join(sources)} has no documents to enrich")
            schema = first.schema

            def all_batches():
                yield first
                yield from iterator

            # claimed before the write: a run that dies mid-write leaves a target its definition still owns
            ownership.claim(storage, target, owners[target])
            written[target] = storage.write_collection(target, schema, all_batches(), replaces=owners[target].files)
            ownership.claim(storage, target, ownership.Owner(spec.cluster_name, (COLLECTION_FILE,)))
    result.row_count = sum(written.values())
    result.uri = storage.uri("collections", next(iter(written)))
    result.metadata.update({
        "documents": result.row_count,
        "target_collections": {t: storage.uri("collections", t) for t in written},
        "fields": ["cluster_id", *fields],
        "unassigned_documents": unassigned,
    })
    if taxonomy is not None:
        result.metadata.update(taxonomy.metadata())
    if replaced:
        result.warnings.append(f"the source already had columns {sorted(replaced)}: the enriched copy replaces them")
        result.metadata["replaced_columns"] = sorted(replaced)
    if unassigned:
        result.warnings.append(
            f"{unassigned} documents arrived after the assignments: their cluster_id is null until the next run")
    return result


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def classify_documents(storage, spec: ClusterDefinition):
    """The definition's taxonomy node of every document (nearest node centroid above the threshold)."""
    from cluster_assets.taxonomy import Classifier, DocumentClasses, load_taxonomy

    classifier = Classifier(load_taxonomy(storage, spec.taxonomy.name), spec.taxonomy.similarity_threshold)
    matrices = (read_matrix(pa.Table.from_batches([b]))
                for b in storage.iter_batches(*layout.asset_parts(spec, layout.EMBEDDINGS), batch_size=BATCH))
    return DocumentClasses(classifier, matrices)
