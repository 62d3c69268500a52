"""Small, fast collections and definitions for the trigger, webhook, check and UI tests.

Three well separated blobs of 4-D points clustered with k-means and reduced with
PCA: a whole definition materializes in about a second.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster_assets.storage import Storage


def blobs_table(per_blob: int = 40, seed: int = 0, start: int = 0, centers=(0.0, 3.0, 6.0)) -> pa.Table:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 0.15, size=(per_blob, 4)) for c in centers]).astype(np.float32)
    words = ("alpha", "beta", "gamma", "delta", "epsilon")
    blob = np.repeat(np.arange(len(centers)), per_blob)
    return pa.table({
        "document_id": [f"doc-{start + i:05d}" for i in range(len(X))],
        "text": [f"{words[b % len(words)]} item {i}" for i, b in enumerate(blob)],
        "vec": pa.array(list(X), pa.list_(pa.float32())),
    })


def write_blobs(storage: Storage, collection_id: str = "points", **kwargs) -> pa.Table:
    table = blobs_table(**kwargs)
    storage.write_collection(collection_id, table.schema, [table])
    return table


def append_blobs(storage: Storage, collection_id: str, count: int, start: int, seed: int = 1) -> None:
    """Add ``count`` new documents as a new Parquet file beside the existing ones."""
    table = blobs_table(per_blob=count, seed=seed, start=start, centers=(3.0,))
    storage.write_table(table, "collections", collection_id, f"part-{start}.parquet")


def definition(name: str = "blobs", collection: str = "points", **extra) -> dict:
    body = {
        "cluster_name": name,
        "source_collection_ids": [collection],
        "feature_addresses": ["vec"],
        "algorithm": "kmeans",
        "algorithm_config": {"num_clusters": 3},
        "dimension_reduction": {"method": "pca", "components": 2},
    }
    body.update(extra)
    return body
