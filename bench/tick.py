"""One event-sensor tick, done as the daemon would: evaluate the sensor, apply its partition requests,
launch its runs (in this process, recorded in DAGSTER_HOME's instance); prints the run ids as JSON.

    python -m bench.tick SENSOR_NAME
"""

from __future__ import annotations

import json
import sys


def main(sensor_name: str) -> None:
    import dagster as dg

    from cluster_assets.loader import build_defs
    from cluster_assets.resources import StorageResource, default_storage_root

    defs = build_defs()
    instance = dg.DagsterInstance.get()
    sensor = defs.resolve_sensor_def(sensor_name)
    tick = sensor.evaluate_tick(dg.build_sensor_context(
        instance=instance, resources={"storage": StorageResource(root=default_storage_root())}))
    for request in tick.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    job = defs.resolve_implicit_global_asset_job_def()
    runs = [job.execute_in_process(instance=instance, asset_selection=list(r.asset_selection), tags=r.tags,
                                   raise_on_error=False) for r in tick.run_requests or []]
    print(json.dumps({"runs": [r.run_id for r in runs], "success": all(r.success for r in runs),
                      "skip": tick.skip_message}))


if __name__ == "__main__":
    main(sys.argv[1])
