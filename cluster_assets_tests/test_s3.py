"""The same end-to-end run against a real S3 endpoint on loopback (moto's server mode).

Production's code path: ``CLUSTER_ASSETS_STORAGE=s3://bucket/prefix`` and the
usual AWS variables, read by ``Storage`` through pyarrow's S3 filesystem; boto3
lists what landed in the bucket.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import dagster as dg
import pyarrow as pa
import pytest

from cluster_assets.demo import write_demo_collections
from cluster_assets.loader import build_defs
from cluster_assets.storage import STAGING_PREFIX, Storage

REPO = Path(__file__).resolve().parent.parent
BUCKET, PREFIX = "cluster-assets-test", "team/prod"
ROOT = f"s3://{BUCKET}/{PREFIX}"
GROUPS = ("digits_kmeans", "product_topics")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    home = tmp_path_factory.mktemp("aws")
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.setenv("AWS_REGION", "us-east-1")
            env.delenv("AWS_ENDPOINT_URL_S3", raising=False)
            env.delenv("AWS_SESSION_TOKEN", raising=False)
            env.delenv("AWS_PROFILE", raising=False)
            env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe an instance metadata service
            env.setenv("AWS_CONFIG_FILE", str(home / "config"))
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
            env.setenv("CLUSTER_ASSETS_STORAGE", ROOT)
            for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
                env.delenv(key, raising=False)
            client = boto3.client("s3")
            client.create_bucket(Bucket=BUCKET)
            yield client
    finally:
        server.stop()


def keys(client, prefix: str = PREFIX) -> list[str]:
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found += [item["Key"] for item in page.get("Contents", [])]
    return found


@pytest.fixture(scope="module")
def run(s3, tmp_path_factory):
    storage = Storage(ROOT)
    assert write_demo_collections(storage) == {"digits": 1797, "products": 1200}
    sources = {key: s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
               for key in keys(s3, f"{PREFIX}/collections/") if key.endswith(".parquet")}
    folder = tmp_path_factory.mktemp("s3_clusters")
    for name in ("digits_kmeans.yaml", "product_topics.json"):
        shutil.copy(REPO / "clusters" / name, folder)
    defs = build_defs(folder)
    result = dg.materialize([a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
                            resources=defs.resources, selection=dg.AssetSelection.groups(*GROUPS),
                            instance=dg.DagsterInstance.ephemeral())
    return result, storage, sources


def test_end_to_end_on_s3(s3, run):
    result, storage, sources = run
    assert result.success
    stored = set(keys(s3))
    for group in GROUPS:
        for name in ("centroids.parquet", "members.parquet"):
            assert f"{PREFIX}/artifacts/{group}/{result.run_id}/{name}" in stored
    assert f"{PREFIX}/collections/digits_digits_kmeans_enriched/part-0.parquet" in stored
    assert f"{PREFIX}/collections/products_enriched/part-0.parquet" in stored
    assert not [k for k in stored if Path(k).name.startswith(STAGING_PREFIX)]  # no staging object left behind
    # what landed is whole and readable
    enriched = storage.collection_dataset("digits_digits_kmeans_enriched").to_table()
    assert enriched.num_rows == 1797 and "cluster_id" in enriched.column_names and "label" in enriched.column_names
    members = storage.read_table("artifacts", "product_topics", result.run_id, "members.parquet")
    assert members.num_rows == 1200 and members.column_names[-3:] == ["x", "y", "z"]
    # the source collections were only read
    assert sources == {key: s3.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in sources}


def test_metadata_points_at_s3_uris(run):
    result, _, _ = run
    materializations = {e.event_specific_data.materialization.asset_key.to_user_string():
                        e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()}
    labels = materializations["digits_kmeans/labels"]
    assert labels["centroids_artifact"].value == f"{ROOT}/artifacts/digits_kmeans/{result.run_id}/centroids.parquet"
    assert materializations["digits_kmeans/enriched_collection"]["dagster/uri"].value == (
        f"{ROOT}/collections/digits_digits_kmeans_enriched")


def test_a_failed_write_on_s3_leaves_the_previous_collection(s3, run):
    _, storage, _ = run
    before = storage.collection_dataset("products_enriched").to_table()
    etag = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/collections/products_enriched/part-0.parquet")["ETag"]

    def failing():
        yield before.slice(0, 100)
        raise RuntimeError("network gone")

    with pytest.raises(RuntimeError, match="network gone"):
        storage.write_collection("products_enriched", before.schema, failing())
    assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/collections/products_enriched/part-0.parquet")["ETag"] == etag
    assert storage.collection_dataset("products_enriched").to_table().equals(before)
    assert not [k for k in keys(s3) if Path(k).name.startswith(STAGING_PREFIX)]


def test_a_bucket_that_does_not_exist_is_a_clear_error(s3):
    storage = Storage("s3://no-such-bucket/x")
    table = pa.table({"document_id": ["a"]})
    with pytest.raises(OSError, match="no-such-bucket"):
        storage.write_collection("c", table.schema, [table])
