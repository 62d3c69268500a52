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
    from cluster_assets.runs import launch_tick

    defs = build_defs()
    instance = dg.DagsterInstance.get()
    sensor = defs.resolve_sensor_def(sensor_name)
    tick = sensor.evaluate_tick(dg.build_sensor_context(
        instance=instance, resources={"storage": StorageResource(root=default_storage_root())}))
    runs = launch_tick(defs, instance, tick)
    print(json.dumps({"runs": [r.run_id for r in runs], "success": all(r.success for r in runs),
                      "skip": tick.skip_message}))


if __name__ == "__main__":
    main(sys.argv[1])
