"""Several source collections whose document ids overlap: a document is (collection, document_id) throughout."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster_assets.stages import layout
from cluster_assets.stages.outputs import read_output
from cluster_assets.spec import load_definitions
from cluster_assets_tests.conftest import materialize_group, write_definition
from cluster_assets_tests.small import blobs_table, definition


def test_two_collections_holding_the_same_ids_are_clustered_labelled_and_enriched_apart(definitions_dir, storage):
    a = blobs_table(per_blob=30)
    far = blobs_table(per_blob=30, seed=1, centers=(20.0, 26.0))
    b = far.set_column(1, "text", pa.array([("omega" if i < 30 else "sigma") + f" thing {i}" for i in range(60)]))
    assert set(a.column("document_id").to_pylist()) >= set(b.column("document_id").to_pylist())
    storage.write_collection("col_a", a.schema, [a])
    storage.write_collection("col_b", b.schema, [b])
    write_definition(definitions_dir, definition("two", source_collection_ids=["col_a", "col_b"],
                                                 algorithm_config={"num_clusters": 5},
                                                 enrichment={"fields": ["cluster_id", "label", "keywords",
                                                                        "representative"]}))
    spec = load_definitions(definitions_dir)[0][0].spec
    result = materialize_group(definitions_dir, "two")
    assert result.success
    fit = layout.read_current(storage, spec).fit_id
    embeddings = storage.read_table(*layout.sample_parts(spec, fit, layout.EMBEDDINGS))
    assert sorted(set(embeddings.column("collection_id").to_pylist())) == ["col_a", "col_b"]
    sample = storage.read_table(*layout.sample_parts(spec, fit, layout.SAMPLE))
    assert sample.column("collection_id").to_pylist() == embeddings.column("collection_id").to_pylist()

    enriched = {cid: pq.read_table(f"{storage.root}/collections/{cid}_two_enriched/part-0.parquet")
                for cid in ("col_a", "col_b")}
    assert enriched["col_a"].num_rows == 90 and enriched["col_b"].num_rows == 60
    clusters_a = set(enriched["col_a"].column("cluster_id").to_pylist())
    clusters_b = set(enriched["col_b"].column("cluster_id").to_pylist())
    assert len(clusters_a) == 3 and len(clusters_b) == 2 and not clusters_a & clusters_b
    # the words of each cluster come from its own collection's documents, never from a namesake in the other
    labels = read_output(storage, "two", layout.LABELS)
    words = {c: " ".join(k) for c, k in zip(labels.column("cluster_id").to_pylist(),
                                            labels.column("keywords").to_pylist())}
    assert all(("omega" in words[c]) != ("sigma" in words[c]) for c in clusters_b)
    assert not any("omega" in words[c] or "sigma" in words[c] for c in clusters_a)
    assert set(labels.column("representative_collection_ids").to_pylist()[0]) <= {"col_a", "col_b"}
    for cid, table in enriched.items():
        mine = sum(c == cid for cids in labels.column("representative_collection_ids").to_pylist() for c in cids)
        assert pc.sum(table.column("representative")).as_py() == mine

    # the map's members name their collection, and a point's hover text is its own document's
    from cluster_assets.stages.map import run_map_data

    members = storage.read_table(*layout.artifact_parts(spec, result.run_id, layout.MEMBERS_ARTIFACT))
    assert members.num_rows == 150 and sorted(set(members.column("collection_id").to_pylist())) == ["col_a", "col_b"]
    data = run_map_data(storage, spec, result.run_id)
    for collection, snippet in zip(members.column("collection_id").to_pylist(), data.snippets):
        assert (("omega" in snippet or "sigma" in snippet) == (collection == "col_b")), (collection, snippet)
