"""A one-asset code location for tests that need the real ``dagster asset materialize`` but no clustering.

Its asset ``tiny/sample`` takes the project's storage resource, as every stage
does, and runs in-process like the project's definitions. When ``$TINY_BLOCK``
names a file, the asset creates it and sleeps: a run to kill mid-way.
"""

import os
import time

import dagster as dg

from cluster_assets.resources import storage_resource


@dg.asset(key=["tiny", "sample"], required_resource_keys={"storage"})
def sample() -> None:
    block = os.environ.get("TINY_BLOCK")
    if block:
        open(block, "w").close()
        time.sleep(600)


defs = dg.Definitions(assets=[sample], resources={"storage": storage_resource()}, executor=dg.in_process_executor)
