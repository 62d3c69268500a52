"""``embeddings``: the sample's validated float32 matrix, and how every file's features are read.

Addresses are resolved once (the plan, kept beside the sample); lengths, NaN and
infinities are checked document by document. Only the sample's matrix is written:
the per-file stages read the feature columns straight from the source files.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets import features
from cluster_assets.features import FeatureColumn, FeatureError
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID
from cluster_assets.storage import CollectionError, Storage

BATCH = 65_536
COLLECTION = "collection_id"


def plan_features(storage: Storage, spec: ClusterDefinition) -> list[FeatureColumn]:
    """Resolve each address to a column present, with the same kind, in every source collection."""
    plan: list[FeatureColumn] = []
    for address in spec.feature_addresses:
        column = None
        kind, dim = None, None
        for cid in spec.source_collection_ids:
            schema = storage.collection_dataset(cid).schema
            resolved = features.resolve_column(address, schema, cid)
            if column is not None and resolved != column:
                raise FeatureError(f"feature address {address!r} is column {column!r} in one collection and "
                                   f"{resolved!r} in {cid!r}: name the columns alike")
            column = resolved
            if column not in schema.names:
                raise CollectionError(
                    f"collection {cid!r} has no feature column {column!r} (from address {address!r}); "
                    f"columns: {', '.join(schema.names)}"
                )
            this_kind = features.column_kind(schema.field(column).type, column, cid)
            if kind and this_kind != kind:
                raise FeatureError(f"feature {column!r} is {kind} in one collection and {this_kind} in {cid!r}")
            kind = this_kind
            dim = max(dim or 0, _dimension(storage, cid, column, this_kind, schema.field(column).type) or 0) or None
        plan.append(FeatureColumn(address, column, kind, dim or 0))
    return plan


def _dimension(storage: Storage, cid: str, column: str, kind: str, dtype: pa.DataType) -> int | None:
    if kind == "sparse":
        dims = [features.sparse_dimension(b.column(0)) for b in storage.iter_collection(cid, [column], BATCH)]
        return max(dims, default=0)
    if kind == "dense" and pa.types.is_fixed_size_list(dtype):
        return dtype.list_size
    # Variable-length lists: the first non-empty vector sets the dimension, every other is checked against it.
    for batch in storage.iter_collection(cid, [column], 1024):
        arr = batch.column(0).drop_null()
        if kind == "multi":
            arr = arr.flatten()
        if len(arr):
            return int(pc.list_value_length(arr)[0].as_py())
    return None


def file_batches(storage: Storage, spec: ClusterDefinition, plan: list[FeatureColumn], partition: str,
                 batch_size: int | None = None, rows: np.ndarray | None = None):
    """Yield (ids, matrix) for one source file, validated as it streams; ``rows`` keeps only those rows."""
    cid, name = layout.split_partition(partition)
    columns = [ID] + list(dict.fromkeys(f.column for f in plan))
    offset = 0
    for batch in storage.iter_file(cid, name, columns, batch_size or BATCH):
        if rows is not None:
            wanted = rows[(rows >= offset) & (rows < offset + batch.num_rows)] - offset
            offset += batch.num_rows
            if not len(wanted):
                continue
            batch = batch.take(pa.array(wanted))
        ids = batch.column(ID).cast(pa.string())
        where = f"collection {cid!r}, file {name}"
        blocks = [features.feature_block(batch.column(f.column), f, ids, f"{where}, column {f.column!r}")
                  for f in plan]
        X = features.combine(blocks, spec.normalize)
        features.check_finite(X, ids, where)
        yield ids, X


def load_plan(storage: Storage, spec: ClusterDefinition, sample_id: str) -> list[FeatureColumn]:
    raw = json.loads(storage.read_bytes(*layout.sample_parts(spec, sample_id, layout.FEATURES)))
    return [FeatureColumn(**f) for f in raw]


def vector_table(ids: pa.Array, X: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(X, dtype=np.float32).reshape(-1))
    return pa.table({ID: ids, "vector": pa.FixedSizeListArray.from_arrays(flat, X.shape[1])})


def vector_schema(dim: int) -> pa.Schema:
    return pa.schema([(ID, pa.string()), ("vector", pa.list_(pa.float32(), dim))])


def read_matrix(table: pa.Table) -> np.ndarray:
    vectors = table.column("vector").combine_chunks()
    dim = vectors.type.list_size
    return vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), dim)


def run_embeddings(ctx: StageContext) -> StageResult:
    """The sample's validated matrix (only the sample is materialized) and the resolved feature plan."""
    storage, spec = ctx.storage, ctx.spec
    sample_id = ctx.need_sample()
    result = StageResult()
    with timed(result, "duration_s"):
        sample_parts = layout.sample_parts(spec, sample_id, layout.SAMPLE)
        if not storage.exists(*sample_parts):
            raise LineageError(f"the sample {sample_id} of {spec.cluster_name!r} is gone: materialize "
                               f"{spec.cluster_name}/sample again")
        sample = storage.read_table(*sample_parts)
        plan = plan_features(storage, spec)
        dim = sum(f.dim for f in plan)
        tables = []
        files = sample.column("file").to_numpy(zero_copy_only=False)
        rows = sample.column("row").to_numpy()
        for partition in dict.fromkeys(files.tolist()):
            chosen = np.sort(rows[files == partition])
            for ids, X in file_batches(storage, spec, plan, partition, rows=chosen):
                tables.append(vector_table(ids, X))
        table = pa.concat_tables(tables) if tables else vector_schema(dim).empty_table()
        expected = sample.column(ID).combine_chunks()
        if not table.column(ID).combine_chunks().equals(expected):
            raise CollectionError(
                f"the source files changed since the sample was taken ({table.num_rows} of {len(expected)} sampled "
                f"documents found where they were): materialize {spec.cluster_name}/sample again")
        # a document is (collection, document_id): ids may repeat across collections
        table = table.append_column(COLLECTION, pc.list_element(pc.split_pattern(sample.column("file"), "/",
                                                                                  max_splits=1), 0))
        uri = storage.write_table(table, *layout.sample_parts(spec, sample_id, layout.EMBEDDINGS))
        storage.write_bytes(json.dumps([f.to_dict() for f in plan]).encode(),
                            *layout.sample_parts(spec, sample_id, layout.FEATURES))
    result.row_count = table.num_rows
    result.uri = uri
    result.metadata.update({
        layout.SAMPLE_ID_KEY: sample_id,
        "sample_rows": table.num_rows,
        "dimensions": dim,
        "features": {f.address: f"{f.column} ({f.kind}, {f.dim} dims)" for f in plan},
        "sample_matrix_mb": round(table.num_rows * dim * 4 / 1e6, 1),
    })
    return result


def read_sample_matrix(storage: Storage, spec: ClusterDefinition, sample_id: str) -> tuple[pa.Array, np.ndarray]:
    parts = layout.sample_parts(spec, sample_id, layout.EMBEDDINGS)
    if not storage.exists(*parts):
        raise LineageError(f"the sample embeddings {sample_id} of {spec.cluster_name!r} are gone: materialize "
                           f"{spec.cluster_name}/embeddings again")
    table = storage.read_table(*parts)
    return table.column(ID).combine_chunks(), read_matrix(table)


def read_sample_keys(storage: Storage, spec: ClusterDefinition, sample_id: str) -> list[tuple[str, str]]:
    """(collection_id, document_id) of every sampled document, in the sample matrix's order."""
    sample = storage.read_table(*layout.sample_parts(spec, sample_id, layout.SAMPLE), columns=[ID, "file"])
    collections = [f.split("/", 1)[0] for f in sample.column("file").to_pylist()]
    return list(zip(collections, sample.column(ID).cast(pa.string()).to_pylist()))
