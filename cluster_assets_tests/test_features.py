"""Feature addresses -> one matrix: dense, sparse and multi-vector columns, several addresses combined."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cluster_assets import features, stages
from cluster_assets.features import FeatureError
from cluster_assets.spec import DefinitionError, parse_definition
from cluster_assets.stages import layout
from cluster_assets.stages.embed import read_matrix
from cluster_assets.storage import CollectionError, Storage

N = 40
DIM = 6
SPARSE_DIM = 50


def mixed_table(seed: int = 0) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """A collection with one column of each kind, and the dense matrix each should become."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(N, DIM)).astype(np.float32)
    multi_counts = rng.integers(1, 5, size=N)
    multi = [rng.normal(size=(k, DIM)).astype(np.float32) for k in multi_counts]
    sparse_idx = [np.sort(rng.choice(SPARSE_DIM, size=rng.integers(1, 6), replace=False)) for _ in range(N)]
    sparse_idx[0] = np.append(sparse_idx[0][sparse_idx[0] < SPARSE_DIM - 1], SPARSE_DIM - 1)  # sets the dimension
    sparse_val = [rng.uniform(0.1, 1.0, size=len(i)).astype(np.float32) for i in sparse_idx]
    expected_sparse = np.zeros((N, SPARSE_DIM), np.float32)
    for row, (idx, val) in enumerate(zip(sparse_idx, sparse_val)):
        expected_sparse[row, idx] = val
    table = pa.table({
        "document_id": [f"doc-{i}" for i in range(N)],
        "text": [f"document number {i}" for i in range(N)],
        "dense": pa.array(list(dense), pa.list_(pa.float32())),
        "fixed": pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1)), DIM),
        "multi": pa.array([m.tolist() for m in multi], pa.list_(pa.list_(pa.float32()))),
        "sparse": pa.array(
            [{"indices": i.tolist(), "values": v.tolist()} for i, v in zip(sparse_idx, sparse_val)],
            pa.struct([("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))]),
        ),
    })
    expected = {
        "dense": dense,
        "fixed": dense,
        "multi": np.stack([m.mean(axis=0) for m in multi]),
        "sparse": expected_sparse,
    }
    return table, expected


@pytest.fixture
def mixed(storage):
    table, expected = mixed_table()
    storage.write_collection("mixed", table.schema, [table])
    return storage, expected


def embed(storage: Storage, addresses: list[str], **extra) -> tuple[np.ndarray, dict]:
    spec = parse_definition({
        "cluster_name": "feature_test",
        "source_collection_ids": ["mixed"],
        "feature_addresses": addresses,
        "algorithm_config": {"num_clusters": 2},
        **extra,
    })
    result = stages.run_plain(storage, spec, "run", until="embeddings")["embeddings"]
    table = storage.read_table(*layout.sample_parts(spec, "run", layout.EMBEDDINGS))
    assert table.column("document_id").to_pylist() == [f"doc-{i}" for i in range(N)]
    return read_matrix(table), result.metadata


def test_mixpeek_address_resolves_to_its_output_column():
    assert features.parse_address("mixpeek://text_extractor@v1/text_embedding") == "text_embedding"
    assert features.parse_address("mixpeek://x@v1/col") == "col"
    assert features.parse_address("plain_column") == "plain_column"
    for bad in ("mixpeek://x/col", "mixpeek://x@v1/", "has space", "../col"):
        with pytest.raises(ValueError, match="neither"):
            features.parse_address(bad)


def test_a_bad_address_in_a_definition_names_the_field():
    with pytest.raises(DefinitionError) as caught:
        parse_definition({"cluster_name": "a", "source_collection_ids": ["c"], "feature_addresses": ["mixpeek://x"]},
                         "defs/a.json")
    assert caught.value.field == "feature_addresses" and "defs/a.json" in str(caught.value)


@pytest.mark.parametrize("column", ["dense", "fixed", "multi", "sparse"])
def test_each_kind_of_feature_column_becomes_its_dense_matrix(mixed, column):
    storage, expected = mixed
    X, metadata = embed(storage, [f"mixpeek://extractor@v2/{column}"])
    np.testing.assert_allclose(X, expected[column], rtol=1e-6, atol=1e-6)
    kind = {"fixed": "dense"}.get(column, column)
    assert metadata["features"][f"mixpeek://extractor@v2/{column}"] == f"{column} ({kind}, {X.shape[1]} dims)"


def test_two_addresses_combine_into_one_matrix_of_the_summed_dimension(mixed):
    storage, expected = mixed
    X, metadata = embed(storage, ["mixpeek://a@v1/dense", "mixpeek://b@v1/sparse"])
    assert X.shape == (N, DIM + SPARSE_DIM)
    assert metadata["dimensions"] == DIM + SPARSE_DIM
    # each block L2-normalised and weighted equally, so that neither dominates by scale
    left, right = X[:, :DIM], X[:, DIM:]
    np.testing.assert_allclose(np.linalg.norm(left, axis=1), 1 / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(right, axis=1), 1 / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(left * np.sqrt(2), expected["dense"] / np.linalg.norm(expected["dense"], axis=1,
                                                                                    keepdims=True), rtol=1e-5)


def test_three_kinds_together(mixed):
    storage, _ = mixed
    X, _ = embed(storage, ["dense", "multi", "sparse"])
    assert X.shape == (N, DIM + DIM + SPARSE_DIM)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)


def test_normalize_option_normalises_a_single_feature(mixed):
    storage, expected = mixed
    X, _ = embed(storage, ["dense"], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)


def test_sparse_dimension_spans_every_batch():
    # The highest index seen anywhere sets the dimension, not the first batch's.
    sparse_type = pa.struct([("indices", pa.list_(pa.int64())), ("values", pa.list_(pa.float32()))])
    arr = pa.array([{"indices": [0, 3], "values": [1.0, 2.0]}, {"indices": [9], "values": [5.0]}], sparse_type)
    assert features.sparse_dimension(arr) == 10
    X = features.sparse_matrix(arr, None, "here", 10)
    assert X.shape == (2, 10) and X[0, 3] == 2.0 and X[1, 9] == 5.0 and X.sum() == 8.0


def test_a_column_that_is_not_a_feature_is_refused_by_name(mixed):
    storage, _ = mixed
    with pytest.raises(FeatureError, match=r"collection 'mixed': column 'text' of type string is not a feature"):
        embed(storage, ["mixpeek://x@v1/text"])


def test_a_missing_feature_column_names_collection_column_and_address(mixed):
    storage, _ = mixed
    with pytest.raises(CollectionError) as caught:
        embed(storage, ["mixpeek://text_extractor@v1/text_embedding"])
    message = str(caught.value)
    assert "collection 'mixed'" in message and "'text_embedding'" in message
    assert "mixpeek://text_extractor@v1/text_embedding" in message and "dense" in message  # lists the columns


def test_ragged_multi_vector_names_the_document():
    arr = pa.array([[[1.0, 2.0]], [[1.0, 2.0], [3.0]]], pa.list_(pa.list_(pa.float32())))
    ids = pa.array(["a", "b"])
    with pytest.raises(FeatureError, match=r"document 'b'"):
        features.multi_matrix(arr, ids, "collection 'c', column 'm'", 2)


def test_null_component_names_the_document():
    arr = pa.array([[1.0, 2.0], [None, 2.0]], pa.list_(pa.float32()))
    with pytest.raises(FeatureError, match=r"collection 'c', column 'v': document 'b'"):
        features.dense_matrix(arr, pa.array(["a", "b"]), "collection 'c', column 'v'", 2)


def test_sparse_indices_and_values_of_different_lengths_name_the_document():
    sparse_type = pa.struct([("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))])
    arr = pa.array([{"indices": [0], "values": [1.0]}, {"indices": [0, 1], "values": [1.0]}], sparse_type)
    with pytest.raises(FeatureError, match=r"document 'y' has indices and values of different lengths"):
        features.sparse_matrix(arr, pa.array(["x", "y"]), "here", 4)
