"""The no-Dagster reference: the same stage functions, called in order in one plain process.

    python -m bench.plain DEFINITIONS_DIR STORAGE_ROOT OUT_JSON

Loads the definitions folder as the code location does, then calls
every stage of ``cluster_assets.stages.STAGES`` directly; writes per-stage wall time and peak
memory (the same ``peak_rss`` sampler the Dagster assets use) to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path


def main(definitions_dir: str, storage_root: str, out_json: str) -> None:
    start = time.perf_counter()
    from cluster_assets.profiling import peak_rss
    from cluster_assets.spec import load_definitions
    from cluster_assets.stages import STAGES, plain_context
    from cluster_assets.storage import Storage

    loaded, problems = load_definitions(Path(definitions_dir))
    if problems or len(loaded) != 1:
        raise SystemExit(f"expected one valid definition in {definitions_dir}: {[str(p) for p in problems]}")
    spec = loaded[0].spec
    storage = Storage(storage_root)
    # one run does it all: the sample, the fit and every file share the run id, as in a full Dagster run
    ctx = plain_context(storage, spec, uuid.uuid4().hex)
    imports_s = time.perf_counter() - start
    report: dict = {"imports_s": round(imports_s, 3), "stages": {}}
    for stage in STAGES:
        t0 = time.perf_counter()
        with peak_rss() as memory:
            result = stage.run(ctx)
            if result.commit:
                result.commit()
        report["stages"][stage.name] = {
            "wall_s": round(time.perf_counter() - t0, 3),
            "duration_s": result.metadata.get("duration_s"),
            "peak_rss_mb": memory.get("peak_rss_mb"),
            **{k: v for k, v in result.metadata.items() if k.endswith("_s") and k != "duration_s"},
        }
    report["total_s"] = round(time.perf_counter() - start, 3)
    Path(out_json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:4])
