"""A full run of a definition: every stage over every source file, as one Dagster run.

``dagster asset materialize --select group:X`` refuses a group that mixes per-file and
per-fit assets without a partition, so ``cluster-assets run`` (and the tests, and the
schedules) register the files as partitions and submit one run over all of them.
"""

from __future__ import annotations

import dagster as dg

from cluster_assets import partitions
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import PER_FILE, STAGE_NAMES
from cluster_assets.storage import Storage

TAG_DEFINITION = "cluster_assets/definition"


def stage_keys(spec: ClusterDefinition, names=STAGE_NAMES) -> list[dg.AssetKey]:
    return [dg.AssetKey([spec.cluster_name, name]) for name in names]


def full_run_request_parts(instance: dg.DagsterInstance, storage: Storage, spec: ClusterDefinition,
                           stages=STAGE_NAMES) -> tuple[list[dg.AssetKey], dict[str, str]]:
    """Sync the partitions with the source files; the asset keys and tags of a run over all of them."""
    keys, _, _ = partitions.sync_partitions(instance, storage, spec)
    return stage_keys(spec, stages), {**partitions.range_tags(keys), TAG_DEFINITION: spec.cluster_name}


def incremental_keys(spec: ClusterDefinition) -> list[dg.AssetKey]:
    """What a run over new files materializes: their per-file work, with the current fit."""
    return stage_keys(spec, PER_FILE)


def run_full(defs: dg.Definitions, spec: ClusterDefinition, instance: dg.DagsterInstance, storage: Storage,
             tags: dict[str, str] | None = None, raise_on_error: bool = False,
             stages=STAGE_NAMES, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """Execute a full run of ``spec`` (or of some of its ``stages``) over every source file in this process,
    recorded in ``instance`` like any other run (``run_config``: e.g. ``enrich_runs.run_config``)."""
    selection, run_tags = full_run_request_parts(instance, storage, spec, stages)
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=selection, tags={**run_tags, **(tags or {})},
                                  raise_on_error=raise_on_error, run_config=run_config)


def submit_full_run(client, instance: dg.DagsterInstance, storage: Storage, spec: ClusterDefinition,
                    location: str = "cluster_assets", tags: dict[str, str] | None = None, stages=STAGE_NAMES,
                    run_config: dict | None = None) -> str:
    """Submit a full run (or one of some ``stages`` over every file) through Dagster's GraphQL client
    (``dagster_graphql.DagsterGraphQLClient``): the files are registered as partitions in ``instance``
    (the webserver's), the run covers them all as one range. Returns the run id."""
    selection, run_tags = full_run_request_parts(instance, storage, spec, stages)
    return client.submit_job_execution("__ASSET_JOB", repository_location_name=location,
                                       asset_selection=[list(k.path) for k in selection],
                                       tags={**run_tags, **(tags or {})}, run_config=run_config)


def launch_tick(defs: dg.Definitions, instance: dg.DagsterInstance, tick) -> list[dg.ExecuteInProcessResult]:
    """Do in this process what the daemon does with a sensor or schedule tick: apply its partition
    requests, then execute each of its run requests (the bench and the tests, without a daemon)."""
    for request in getattr(tick, "dynamic_partitions_requests", None) or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            partitions.add_partitions(instance, request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    job = defs.resolve_implicit_global_asset_job_def()
    return [job.execute_in_process(instance=instance, asset_selection=list(r.asset_selection), tags=r.tags,
                                   partition_key=r.partition_key, raise_on_error=False)
            for r in tick.run_requests or []]
