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
from cluster_assets.storage import STAGING_PREFIX, Storage
from cluster_assets_tests.conftest import materialize_group

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
    instance = dg.DagsterInstance.ephemeral()
    results = {group: materialize_group(folder, group, instance) for group in GROUPS}
    return results, storage, sources


def test_end_to_end_on_s3(s3, run):
    results, storage, sources = run
    assert all(result.success for result in results.values())
    stored = set(keys(s3))
    for group in GROUPS:
        for name in ("centroids.parquet", "members.parquet"):
            assert f"{PREFIX}/artifacts/{group}/{results[group].run_id}/{name}" in stored
        fit = results[group].run_id
        assert f"{PREFIX}/assets/{group}/fits/{fit}/model.pkl" in stored
    assert f"{PREFIX}/collections/digits_digits_kmeans_enriched/part-0.parquet" in stored
    assert f"{PREFIX}/collections/products_enriched/part-0.parquet" in stored
    assert not [k for k in stored if Path(k).name.startswith(STAGING_PREFIX)]  # no staging object left behind
    # what landed is whole and readable
    enriched = storage.collection_dataset("digits_digits_kmeans_enriched").to_table()
    assert enriched.num_rows == 1797 and "cluster_id" in enriched.column_names and "label" in enriched.column_names
    members = storage.read_table("artifacts", "product_topics", results["product_topics"].run_id, "members.parquet")
    assert members.num_rows == 1200 and members.column_names[2:] == ["x", "y", "z", "collection_id"]
    # the source collections were only read
    assert sources == {key: s3.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in sources}


def test_metadata_points_at_s3_uris(run):
    results, _, _ = run
    result = results["digits_kmeans"]
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


def test_a_failed_multipart_write_is_aborted_and_leaves_the_previous_object(s3, run):
    # Larger than one part: the upload is multipart. pyarrow's own S3 stream would complete it on error.
    _, storage, _ = run
    key = f"{PREFIX}/assets/big.bin"
    storage.write_bytes(b"old", "assets", "big.bin")
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    with pytest.raises(RuntimeError, match="killed"):
        with storage.atomic_output("assets", "big.bin") as stream:
            stream.write(b"x" * (20 * 1024 * 1024))  # one 16 MiB part uploaded, 4 MiB buffered
            raise RuntimeError("killed")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == etag
    assert storage.read_bytes("assets", "big.bin") == b"old"
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # aborted, nothing billed or left
    storage.write_bytes(b"y" * (20 * 1024 * 1024), "assets", "big.bin")  # and a whole one completes
    assert len(storage.read_bytes("assets", "big.bin")) == 20 * 1024 * 1024


def test_a_bucket_that_does_not_exist_is_a_clear_error(s3):
    storage = Storage("s3://no-such-bucket/x")
    table = pa.table({"document_id": ["a"]})
    with pytest.raises(OSError, match="no-such-bucket"):
        storage.write_collection("c", table.schema, [table])
