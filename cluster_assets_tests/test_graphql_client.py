"""Submit a definition's run from a program and poll it, as docs/operations.md shows, against a real webserver."""

from __future__ import annotations

import time

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from cluster_assets.runs import submit_full_run
from cluster_assets.spec import load_definitions
from cluster_assets.storage import Storage
from cluster_assets_tests.webserver import GRAPHQL_GROUP, LOCATION

TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@pytest.fixture(scope="module")
def webserver(shared_webserver):
    """The session's webserver; this module's definition is group ``polled`` (the blobs of collection
    ``points``, k-means with 3 clusters, a nightly schedule)."""
    return shared_webserver, Storage(shared_webserver.storage_root)


def wait_for(client: DagsterGraphQLClient, run_id: str, timeout: float = 300) -> dg.DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in TERMINAL:
            return status
        time.sleep(1)
    raise TimeoutError(f"run {run_id} still {status} after {timeout} s")


def test_submit_a_definitions_group_and_poll_to_success(webserver):
    server, storage = webserver
    client = DagsterGraphQLClient(server.host, port_number=server.port)
    spec = next(d.spec for d in load_definitions(server.definitions_dir)[0] if d.spec.group_name == GRAPHQL_GROUP)
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        run_id = submit_full_run(client, instance, storage, spec, LOCATION, tags={"submitted_by": "test_graphql_client"})
    assert wait_for(client, run_id) == dg.DagsterRunStatus.SUCCESS

    # The run wrote this run's artifacts and the enriched collection.
    for name in ("members.parquet", "centroids.parquet"):
        assert storage.exists("artifacts", GRAPHQL_GROUP, run_id, name)
    assert storage.read_table("collections", f"points_{GRAPHQL_GROUP}_enriched", "part-0.parquet").num_rows == 120

    # And the instance behind the webserver recorded it with its metadata.
    instance = dg.DagsterInstance.from_config(str(server.home))
    record = instance.fetch_materializations(dg.AssetKey([GRAPHQL_GROUP, "assignments"]), limit=1).records[0]
    assert record.run_id == run_id and record.partition_key == "points/part-0.parquet"
    assert record.asset_materialization.metadata["num_clusters"].value == 3
    assert instance.get_run_by_id(run_id).tags["submitted_by"] == "test_graphql_client"


def test_unknown_job_is_a_client_error(webserver):
    server, _ = webserver
    client = DagsterGraphQLClient(server.host, port_number=server.port)
    with pytest.raises(DagsterGraphQLClientError):
        client.submit_job_execution("no_such_job", repository_location_name=LOCATION)
