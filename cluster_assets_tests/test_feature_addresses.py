"""Feature addresses keep their extractor and version; the model is never shown vector columns."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from cluster_assets.features import FeatureError
from cluster_assets.spec import parse_definition
from cluster_assets.stages import run_plain
from cluster_assets.stages.embed import plan_features
from cluster_assets_tests.llm_servers import KEY, documents, no_llm_environment, openai_server  # noqa: F401

RNG = np.random.default_rng(0)
N = 12


def collection() -> pa.Table:
    dense = pa.array(list(RNG.normal(size=(N, 4)).astype(np.float32)), pa.list_(pa.float32()))
    other = pa.array(list(RNG.normal(size=(N, 4)).astype(np.float32)), pa.list_(pa.float32()))
    sparse = pa.array([{"indices": [1, 7, 30], "values": [0.5, 0.25, 1.0]}] * N,
                      pa.struct([("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))]))
    multi = pa.array([[[1.0, 2.0], [3.0, 4.0]]] * N, pa.list_(pa.list_(pa.float32())))
    schema = pa.schema([
        ("document_id", pa.string()), ("title", pa.string()),
        ("mixpeek://text_extractor@v1/emb", dense.type), ("mixpeek://image_extractor@v2/emb", other.type),
        pa.field("sparse_feat", sparse.type, metadata={"extractor": "splade", "extractor_version": "v1"}),
        ("colbert", multi.type), ("vec", dense.type),
    ])
    return pa.Table.from_arrays([pa.array([f"d{i}" for i in range(N)]), pa.array([f"title {i}" for i in range(N)]),
                                 dense, other, sparse, multi, dense], schema=schema)


def spec(*addresses, **extra):
    return parse_definition({"cluster_name": "feat", "source_collection_ids": ["docs"],
                             "feature_addresses": list(addresses), "algorithm_config": {"num_clusters": 2},
                             **extra})


def test_addresses_resolve_by_extractor_and_version_and_disagreements_name_both(storage):
    storage.write_collection("docs", collection().schema, [collection()])
    plan = plan_features(storage, spec("mixpeek://image_extractor@v2/emb", "mixpeek://splade@v1/sparse_feat"))
    assert [(f.column, f.kind) for f in plan] == [("mixpeek://image_extractor@v2/emb", "dense"),
                                                  ("sparse_feat", "sparse")]
    assert plan_features(storage, spec("sparse_feat"))[0].column == "sparse_feat"  # a plain name still works
    with pytest.raises(FeatureError, match=r"feature address 'mixpeek://other@v3/sparse_feat' names other@v3, but "
                                           r"collection 'docs' records column 'sparse_feat' as made by splade@v1"):
        plan_features(storage, spec("mixpeek://other@v3/sparse_feat"))
    with pytest.raises(FeatureError, match=r"feature 'emb' is ambiguous: it is made by mixpeek://text_extractor@v1/emb, "
                                           r"mixpeek://image_extractor@v2/emb"):
        plan_features(storage, spec("emb"))
    with pytest.raises(FeatureError, match=r"'mixpeek://audio@v1/emb': collection 'docs' has 'emb' only as"):
        plan_features(storage, spec("mixpeek://audio@v1/emb"))


@pytest.mark.usefixtures("no_llm_environment")
def test_without_labeling_inputs_the_model_sees_no_vector_columns(storage, openai_server, monkeypatch):
    storage.write_collection("docs", collection().schema, [collection()])
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    definition = spec("vec", llm_labeling={
        "provider": "openai", "base_url": openai_server.base_url, "cache_ttl_seconds": 0,
        "max_samples_per_cluster": 1})
    results = run_plain(storage, definition, until="labels")
    assert results["labels"].metadata["labeling_source"] == "llm"
    sent = [json.loads(d) for r in openai_server.completions() for d in documents(r.body)]
    assert sent and all(set(d) == {"title"} for d in sent)
