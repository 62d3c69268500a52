"""The per-file work (assign + enrich) in-process and on a local Ray with 1 and 2 workers, side by side.

    python -m bench.ray_bench all --docs 3000000 --files 30 --repeats 3 --root /tmp/ray_bench/3m
    python -m bench.ray_bench all --docs 10000000 --files 100 --repeats 1 --only ray2 --root /tmp/ray_bench/10m

``all`` writes the collection (N documents x 128 float32 around 200 seeded centres, a short
text each, in ``--files`` Parquet files) under ``--root``, fits kmeans k=200 on a 200k sample
once (sample, embeddings, model, then one in-process assignments + labels so that enrichment
has labels), then runs each variant ``--repeats`` times in rotating order, each in a fresh
process: ``run_assignments`` then ``run_enrichment`` of that fit with the variant's engine.
Each variant prints one JSON line: wall time of each stage, peak RSS (VmHWM) of the driver and
of every Ray worker process, the load average before and after, and the bytes the stages wrote.
Results go to ``<root>/results.jsonl``; delete ``--root`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

DIM = 128
CENTRES = 200
SAMPLE = 200_000
COLLECTION = "vecs"
CLUSTER = "ray_bench"
VARIANTS = {"in_process": (None, 0), "ray1": ("local", 1), "ray2": ("local", 2)}


def spec_body() -> dict:
    return {
        "cluster_name": CLUSTER,
        "source_collection_ids": [COLLECTION],
        "feature_addresses": ["embedding"],
        "algorithm": "kmeans",
        "algorithm_config": {"num_clusters": CENTRES},
        "sample_size": SAMPLE,
        "dimension_reduction": {"method": "pca", "components": 2},
        "enrichment": {"fields": ["cluster_id", "label"]},
    }


def write_data(storage, docs: int, files: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, DIM)).astype(np.float32)
    per_file = -(-docs // files)
    for f in range(files):
        start, count = f * per_file, min(per_file, docs - f * per_file)
        frng = np.random.default_rng([seed, f])
        topic = frng.integers(0, CENTRES, count)
        X = centres[topic] + frng.standard_normal((count, DIM), dtype=np.float32) * np.float32(0.35)
        table = pa.table({
            "document_id": pa.array([f"d{i:09d}" for i in range(start, start + count)], pa.string()),
            "text": pa.array(np.char.add("topic words t", topic.astype(str)).tolist(), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), DIM),
        })
        storage.write_table(table, "collections", COLLECTION, f"part-{f:04d}.parquet")


def context(root: str, fit_id: str | None = None):
    from cluster_assets.spec import ClusterDefinition
    from cluster_assets.stages import plain_context
    from cluster_assets.storage import Storage

    spec = ClusterDefinition.model_validate(spec_body())
    return plain_context(Storage(root), spec, fit_id or uuid.uuid4().hex)


def prepare(root: str, docs: int, files: int) -> str:
    from cluster_assets.stages import BY_NAME

    storage_root = Path(root) / "storage"
    shutil.rmtree(root, ignore_errors=True)
    storage_root.mkdir(parents=True)
    from cluster_assets.storage import Storage

    t0 = time.perf_counter()
    write_data(Storage(str(storage_root)), docs, files)
    print(f"data: {docs} x {DIM} in {files} files, {time.perf_counter() - t0:.0f} s", flush=True)
    ctx = context(str(storage_root))
    for name in ("sample", "embeddings", "model", "assignments", "labels"):
        t0 = time.perf_counter()
        result = BY_NAME[name].run(ctx)
        if result.commit:
            result.commit()
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    (Path(root) / "fit.json").write_text(json.dumps({"fit_id": ctx.fit_id, "docs": docs, "files": files}))
    return ctx.fit_id


def vm_hwm_mb(pid: int | str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def ray_workers() -> list[str]:
    """Pids of the Ray worker processes on this machine (the variant's own local Ray)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::") or "default_worker.py" in cmd:
            pids.append(pid)
    return pids


def ray_worker_peaks() -> list[float]:
    """Peak RSS (VmHWM) of every Ray worker process, largest first."""
    return sorted((p for p in map(vm_hwm_mb, ray_workers()) if p), reverse=True)


def cpu_seconds(pid: str) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def variant(root: str, name: str) -> dict:
    from cluster_assets.stages import BY_NAME
    from cluster_assets.stages.engine import InProcessEngine

    address, cpus = VARIANTS[name]
    fit_id = json.loads((Path(root) / "fit.json").read_text())["fit_id"]
    storage_root = Path(root) / "storage"
    ctx = context(str(storage_root), fit_id)
    startup = 0.0
    if address:
        from cluster_assets.engines.ray_engine import RayEngine, connect

        t0 = time.perf_counter()
        connect(address, num_cpus=cpus)
        startup = time.perf_counter() - t0
    engine = (lambda: RayEngine()) if address else InProcessEngine  # a fresh engine per stage, as Dagster's steps
    out = {"variant": name, "cpus": cpus or os.cpu_count(), "ray_start_s": round(startup, 1),
           "load_before": round(os.getloadavg()[0], 2)}
    before = disk_bytes(storage_root)
    wall = 0.0
    cpu0 = {pid: cpu_seconds(pid) for pid in ray_workers()} if address else {}
    own0 = sum(os.times()[:2])
    for stage in ("assignments", "enriched_collection"):
        ctx.engine = engine()
        t0 = time.perf_counter()
        result = BY_NAME[stage].run(ctx)
        took = time.perf_counter() - t0
        wall += took
        out[f"{stage}_s"] = round(took, 2)
        out[f"{stage}_ray_tasks"] = result.metadata.get("ray_tasks")
        out["documents"] = result.metadata["documents"]
    out["per_file_s"] = round(wall, 2)
    out["docs_per_s"] = round(out["documents"] / wall)
    out["docs_per_s_per_core"] = round(out["documents"] / wall / out["cpus"])
    # CPU seconds the work took (the driver's, plus every Ray worker's since the stages began): documents per
    # CPU-second does not depend on how many cores the rest of the machine left us
    out["driver_cpu_s"] = round(sum(os.times()[:2]) - own0, 1)
    out["workers_cpu_s"] = round(sum(cpu_seconds(p) - cpu0.get(p, 0.0) for p in ray_workers()), 1) if address else 0.0
    out["docs_per_cpu_s"] = round(out["documents"] / (out["driver_cpu_s"] + out["workers_cpu_s"]))
    out["driver_peak_rss_mb"] = vm_hwm_mb("self")
    out["worker_peak_rss_mb"] = ray_worker_peaks() if address else []
    out["load_after"] = round(os.getloadavg()[0], 2)
    # outputs are rewritten in place (same fit): report what the two stages write, not the growth
    files = storage_root / "assets" / CLUSTER / "fits" / fit_id / "files"
    target = storage_root / "collections" / f"{COLLECTION}_{CLUSTER}_enriched"
    out["written_mb"] = round((sum(p.stat().st_size for p in files.rglob("assignments.parquet"))
                               + sum(p.stat().st_size for p in files.rglob("stats.parquet"))
                               + disk_bytes(target)) / 2**20, 1)
    out["storage_growth_mb"] = round((disk_bytes(storage_root) - before) / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["all", "prepare", "variant"])
    parser.add_argument("--root", default="/tmp/ray_bench/run")
    parser.add_argument("--docs", type=int, default=3_000_000)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument("--variant", choices=list(VARIANTS))
    parser.add_argument("--reuse", action="store_true", help="keep the data and fit already under --root")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.command == "prepare":
        prepare(args.root, args.docs, args.files)
        return
    if args.command == "variant":
        print(json.dumps(variant(args.root, args.variant)), flush=True)
        return
    if not args.reuse:
        prepare(args.root, args.docs, args.files)
    results: list[dict] = []
    names = list(args.only)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            proc = subprocess.run([sys.executable, "-m", "bench.ray_bench", "variant", "--root", args.root,
                                   "--variant", name], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            line = json.loads(proc.stdout.strip().splitlines()[-1])
            line["repeat"] = r
            print(json.dumps(line), flush=True)
            results.append(line)
            with open(Path(args.root) / "results.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
    print("\nmedians:")
    for name in names:
        rows = [x for x in results if x["variant"] == name]
        med = {k: statistics.median(x[k] for x in rows)
               for k in ("assignments_s", "enriched_collection_s", "per_file_s", "docs_per_s", "docs_per_s_per_core",
                         "docs_per_cpu_s", "driver_peak_rss_mb")}
        print(name, json.dumps(med), "workers' peak RSS:", [x["worker_peak_rss_mb"][:3] for x in rows])


if __name__ == "__main__":
    main()
