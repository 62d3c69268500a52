"""Definitions: the reference API's JSON verbatim, YAML, defaults, and errors as ``<file>: <field>: <message>``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluster_assets.spec import (
    ClusterDefinition,
    DefinitionError,
    definition_problems,
    load_definition_file,
    load_definitions,
    parse_definition,
)

REPO = Path(__file__).resolve().parent.parent
MINIMAL = {"cluster_name": "docs", "source_collection_ids": ["articles"], "feature_addresses": ["embedding"]}


def problem(body: dict, path: str = "clusters/docs.json") -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(body, path)
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value


def test_bundled_definitions_all_load():
    loaded, problems = load_definitions(REPO / "clusters")
    assert problems == []
    names = {d.spec.cluster_name for d in loaded}
    assert {"digits_kmeans", "product_topics"} <= names
    for item in loaded:
        assert item.path.parent == REPO / "clusters"


def test_reference_api_json_loads_verbatim():
    spec = load_definition_file(REPO / "clusters" / "product_topics.json")
    body = json.loads((REPO / "clusters" / "product_topics.json").read_text())
    assert spec.cluster_name == body["cluster_name"]
    assert spec.algorithm == "hdbscan" and spec.algorithm_config == {"min_cluster_size": 20}
    assert spec.dimension_reduction.method == "pca" and spec.dimension_reduction.components == 3
    assert spec.llm_labeling.provider == "openai"  # the reference's "openai_chat_v1"
    assert spec.llm_labeling.model_name == "gpt-4o-mini"
    assert [m.path for m in spec.llm_labeling.labeling_inputs.input_mappings] == ["title", "metadata.department"]
    assert spec.sample_size == 1000
    assert spec.target_collection_ids() == {"products": "products_enriched"}


def test_yaml_and_json_give_the_same_definition(tmp_path):
    body = {**MINIMAL, "algorithm": "agglomerative", "algorithm_config": {"num_clusters": 4},
            "dimension_reduction": {"method": "pca", "components": 3}, "sample_size": 100,
            "enrichment": {"fields": ["label", "keywords"]}}
    (tmp_path / "a.json").write_text(json.dumps(body))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(body))
    assert load_definition_file(tmp_path / "a.json") == load_definition_file(tmp_path / "b.yaml")


def test_defaults():
    spec = parse_definition(MINIMAL)
    assert spec.algorithm == "kmeans"
    assert spec.dimension_reduction is None and spec.llm_labeling is None and spec.sample_size is None
    assert spec.enrichment.fields == ["label", "summary", "keywords"]
    assert spec.target_collection_ids() == {"articles": "articles_docs_enriched"}  # <source>_<cluster_name>_enriched
    assert spec.triggers == []


def test_enrichment_target_and_group_name():
    spec = parse_definition({**MINIMAL, "cluster_name": "news-topics.v2", "source_collection_ids": ["a", "b"],
                             "enrichment": {"target_collection_id": "all_enriched"}})
    assert spec.target_collection_ids() == {"a": "all_enriched", "b": "all_enriched"}
    assert spec.group_name == "news_topics_v2"  # Dagster group names allow [A-Za-z0-9_] only


def test_triggers_are_accepted_and_validated():
    spec = parse_definition({**MINIMAL, "triggers": [{"type": "cron", "cron": "0 3 * * *"},
                                                     {"type": "interval", "hours": 6},
                                                     {"type": "event", "min_new_documents": 100}]})
    assert [t.type for t in spec.triggers] == ["cron", "interval", "event"]
    error = problem({**MINIMAL, "triggers": [{"type": "cron", "cron": "every day"}]})
    assert error.field == "triggers.0.cron" and "not a valid cron" in error.message


def test_unknown_field_is_named():
    error = problem({**MINIMAL, "algoritm": "kmeans"})
    assert error.field == "algoritm" and error.message == "unknown field"


def test_missing_required_field_is_named():
    body = dict(MINIMAL)
    del body["feature_addresses"]
    assert problem(body).field == "feature_addresses"


def test_unknown_algorithm_lists_the_valid_ones():
    error = problem({**MINIMAL, "algorithm": "kmeanz"})
    assert error.field == "algorithm"
    assert "unknown algorithm 'kmeanz'" in error.message
    for name in ("kmeans", "dbscan", "hdbscan", "agglomerative", "spectral", "gaussian_mixture", "mean_shift",
                 "optics"):
        assert name in error.message


def test_unknown_algorithm_parameter_lists_the_valid_ones():
    error = problem({**MINIMAL, "algorithm": "hdbscan", "algorithm_config": {"min_clustr_size": 5}})
    assert error.field == "algorithm_config.min_clustr_size"
    assert "'min_clustr_size'" in error.message and "min_cluster_size" in error.message and "min_samples" in error.message


def test_invalid_parameter_value_is_caught_at_load():
    error = problem({**MINIMAL, "algorithm_config": {"num_clusters": -3}})
    assert error.field == "algorithm_config.num_clusters"


@pytest.mark.parametrize("field,body", [
    ("source_collection_ids", {"source_collection_ids": ["../x"]}),
    ("source_collection_ids", {"source_collection_ids": ["a/b"]}),
    ("cluster_name", {"cluster_name": "../escape"}),
    ("enrichment.target_collection_id", {"enrichment": {"target_collection_id": "../x"}}),
])
def test_ids_with_path_characters_are_refused(field, body):
    error = problem({**MINIMAL, **body})
    assert error.field == field and "no '/', no '..'" in error.message


def test_dimension_reduction_is_checked():
    error = problem({**MINIMAL, "dimension_reduction": {"method": "umap", "components": 4}})
    assert error.field == "dimension_reduction.components"
    assert problem({**MINIMAL, "dimension_reduction": {"method": "tsne"}}).field == "dimension_reduction.method"


def test_every_problem_of_a_file_is_reported():
    problems = definition_problems({**MINIMAL, "algorithm": "nope", "sample_size": 0, "extra": 1}, "x.yaml")
    assert {p.field for p in problems} == {"algorithm", "sample_size", "extra"}
    assert all(str(p).startswith("x.yaml: ") for p in problems)


def test_a_definition_that_is_not_a_mapping():
    error = problem(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert "mapping" in error.message


@pytest.mark.parametrize("name,text,fmt", [
    ("bad.yaml", "cluster_name: [unclosed\nsource_collection_ids: x\n", "YAML"),
    ("bad.json", '{"cluster_name": "x",', "JSON"),
])
def test_a_file_that_fails_to_parse_is_named(tmp_path, name, text, fmt):
    (tmp_path / name).write_text(text)
    with pytest.raises(DefinitionError) as caught:
        load_definition_file(tmp_path / name)
    assert str(caught.value).startswith(f"{tmp_path / name}: cannot parse {fmt}")


def test_one_broken_file_does_not_stop_the_others(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(MINIMAL))
    (tmp_path / "broken.yaml").write_text("cluster_name: [\n")
    (tmp_path / "invalid.json").write_text(json.dumps({**MINIMAL, "cluster_name": "other", "algorithm": "nope"}))
    (tmp_path / "notes.txt").write_text("not a definition")
    loaded, problems = load_definitions(tmp_path)
    assert [d.spec.cluster_name for d in loaded] == ["docs"]
    assert sorted(Path(p.path).name for p in problems) == ["broken.yaml", "invalid.json"]


def test_the_same_cluster_name_twice_names_both_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(MINIMAL))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(MINIMAL))
    loaded, problems = load_definitions(tmp_path)
    assert len(loaded) == 1 and len(problems) == 1
    assert problems[0].field == "cluster_name"
    assert str(tmp_path / "a.json") in str(problems[0]) and str(problems[0]).startswith(str(tmp_path / "b.yaml"))


def test_a_missing_folder_is_one_problem(tmp_path):
    loaded, problems = load_definitions(tmp_path / "absent")
    assert loaded == [] and len(problems) == 1 and "does not exist" in str(problems[0])


def test_model_round_trips_through_json():
    spec = load_definition_file(REPO / "clusters" / "digits_kmeans.yaml")
    again = ClusterDefinition.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec


# --- what a file may not do to the process that loads every definition ---------------------------

def test_yaml_aliases_are_refused_naming_the_line(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "metadata:\n  a: &a [lol, lol]\n  b: [*a, *a]\n")
    with pytest.raises(DefinitionError) as caught:
        load_definition_file(path)
    assert str(caught.value) == (f"{path}: line 8, column 7: YAML aliases (*a) are not allowed in a definition "
                                 "file; write the value out")
    # an anchor nobody refers to is harmless
    path.write_text(yaml.safe_dump(MINIMAL) + "metadata:\n  a: &a [lol, lol]\n")
    assert load_definition_file(path).metadata == {"a": ["lol", "lol"]}


@pytest.mark.parametrize("name,text,message", [
    ("big.yaml", "cluster_name: docs\ndescription: " + "x" * 1_000_000 + "\n",
     "the file is 1,000,033 bytes; a definition file may be at most 1,000,000 bytes"),
    ("deep.json", '{"cluster_name": "docs", "metadata": {"x": ' + "[" * 50_000 + "]" * 50_000 + "}}",
     "the document is nested too deeply (at most 32 levels)"),
    # parsed and validated, but then too deep for pydantic to serialise (the assets' code version)
    ("nested.json", '{"cluster_name": "docs", "metadata": {"x": ' + "[" * 900 + "]" * 900 + "}}",
     "the document is nested too deeply (at most 32 levels)"),
    ("deep.yaml", "cluster_name: docs\nmetadata:\n  x: " + "[" * 1_000 + "]" * 1_000 + "\n",
     "the document is nested too deeply (at most 32 levels)"),
    ("long.json", '{"cluster_name": "docs", "metadata": {"x": 1' + "0" * 5_000 + "}}",
     "cannot parse JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5001 digits; "
     "use sys.set_int_max_str_digits() to increase the limit"),
])
def test_oversized_or_too_deep_files_are_one_problem(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    (tmp_path / "good.json").write_text(json.dumps({**MINIMAL, "cluster_name": "good"}))
    loaded, problems = load_definitions(tmp_path)
    assert [d.spec.cluster_name for d in loaded] == ["good"]
    assert [str(p) for p in problems] == [f"{tmp_path / name}: {message}"]


@pytest.mark.parametrize("name", ["collections", "taxonomies"])
def test_a_cluster_name_that_is_a_reserved_key_prefix(name):
    error = problem({**MINIMAL, "cluster_name": name})
    assert error.field == "cluster_name"
    assert error.message == (f"{name!r} is reserved: its asset keys would clash with {name}/<name> "
                             "(reserved: collections, taxonomies)")


@pytest.mark.parametrize("algorithm,config,field,expected", [
    ("kmeans", {"num_clusters": True}, "num_clusters", "an integer, got a boolean (true)"),
    ("agglomerative", {"n_clusters": True}, "n_clusters", "an integer, got a boolean (true)"),
    ("kmeans", {"num_clusters": 3, "max_iter": False}, "max_iter", "an integer, got a boolean (false)"),
    ("dbscan", {"eps": True}, "eps", "a number, got a boolean (true)"),
])
def test_a_boolean_where_algorithm_config_takes_a_number(algorithm, config, field, expected):
    error = problem({**MINIMAL, "algorithm": algorithm, "algorithm_config": config})
    assert error.field == f"algorithm_config.{field}"
    assert error.message == f"expected {expected}"


def test_booleans_stay_valid_where_the_algorithm_takes_one():
    spec = parse_definition({**MINIMAL, "algorithm_config": {"num_clusters": 3, "copy_x": False, "verbose": True}})
    assert spec.algorithm_config["copy_x"] is False
    assert parse_definition({**MINIMAL, "algorithm": "hdbscan", "algorithm_config": {"allow_single_cluster": True}})


@pytest.mark.parametrize("config,asked,wanted", [
    ({"num_clusters": 5}, "algorithm_config.num_clusters", 5),
    ({}, "kmeans's default", 8),
])
def test_a_sample_smaller_than_the_clusters_is_refused_at_validation(config, asked, wanted):
    error = problem({**MINIMAL, "algorithm_config": config, "sample_size": 4})
    assert error.field == "sample_size"
    assert error.message == (f"4 is smaller than the {wanted} clusters asked for by {asked}; the model is fitted "
                             "on the sample: raise sample_size or lower num_clusters")
    assert parse_definition({**MINIMAL, "algorithm_config": config, "sample_size": wanted}).sample_size == wanted
