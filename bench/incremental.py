"""Growing collections: a full run over N documents in F files, then new files through the event path.

    python bench/incremental.py --n 1000000 --files 10 --new 10000 --repeats 3

Measures, through the real commands on a SQLite instance: the full run (`cluster-assets run`,
RUN_START to RUN_SUCCESS and the whole command), then for each repeat one new file of
``--new`` documents appended and one event-sensor tick launched as the daemon would
(`bench/tick.py`): that run's RUN_START to RUN_SUCCESS (the sensor's interval not counted),
its ratio to the full run, that the enriched files done before are byte-identical, and
that the new documents were assigned by the existing fit. Then two full runs started at
once: steps never overlap, each run's outputs from its own fit, total time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import data  # noqa: E402
from bench.measure import run_child, tail  # noqa: E402

CONCURRENCY = """telemetry: {enabled: false}
concurrency:
  pools: {default_limit: 1, granularity: op}
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--files", type=int, default=10)
    p.add_argument("--new", type=int, default=10_000, help="documents in each new file")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=HERE / "results" / "incremental")
    p.add_argument("--skip-concurrent", action="store_true", help="leave out the two-runs-at-once measure")
    return p.parse_args(argv)


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def run_seconds(instance, run_id: str) -> float:
    stats = instance.get_run_stats(run_id)
    return round(stats.end_time - stats.start_time, 2)


def main(argv=None) -> None:
    import dagster as dg

    args = parse_args(argv)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    storage_root, home, clusters, logs = (args.workdir / d for d in ("storage", "home", "clusters", "logs"))
    for folder in (home, clusters, logs):
        folder.mkdir(parents=True)
    (home / "dagster.yaml").write_text(CONCURRENCY)
    definition = {**data.DEFINITION, "triggers": [{"type": "event", "min_new_documents": 1, "name": "arrival"}]}
    (clusters / "bench.json").write_text(json.dumps(definition))
    env = {**os.environ, "CLUSTER_ASSETS_STORAGE": str(storage_root), "CLUSTER_ASSETS_DEFINITIONS_DIR": str(clusters),
           "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    from cluster_assets.storage import Storage

    storage = Storage(str(storage_root))
    total = args.n + args.repeats * args.new
    corpus = data.Corpus(total)
    per_file = args.n // args.files
    t0 = time.perf_counter()
    data.write_files(storage, corpus, {f"part-{i:03d}.parquet": (i * per_file, (i + 1) * per_file if i < args.files - 1
                                                                  else args.n) for i in range(args.files)})
    print(f"data: {args.n} documents in {args.files} files, {time.perf_counter() - t0:.0f} s", flush=True)
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "dagster"), "instance", "migrate"], env=env, check=True, capture_output=True)

    report: dict = {"n": args.n, "files": args.files, "new": args.new}
    full = run_child([str(bin_dir / "cluster-assets"), "run", "bench"], logs / "full.log", env, cwd=REPO)
    if full.returncode != 0:
        raise SystemExit(f"full run failed:\n{tail(full.log)}")
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    [full_run] = instance.get_runs()
    fit_id = full_run.run_id
    report["full"] = {"command_s": round(full.wall_s, 2), "run_s": run_seconds(instance, fit_id),
                      "peak_rss_mb": full.peak_rss_mb}
    target = storage_root / "collections" / f"{data.COLLECTION}_bench_enriched"
    incremental = []
    for k in range(args.repeats):
        before = hashes(target)
        start = args.n + k * args.new
        data.write_files(storage, corpus, {f"new-{k}.parquet": (start, start + args.new)})
        tick = run_child([sys.executable, "-m", "bench.tick", "bench__arrival"], logs / f"tick-{k}.log", env, cwd=REPO)
        out = json.loads(tick.log.read_text().strip().splitlines()[-1])
        if not out["success"] or len(out["runs"]) != 1:
            raise SystemExit(f"incremental run failed: {out}\n{tail(tick.log)}")
        run_id = out["runs"][0]
        after = hashes(target)
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        fits = {r.event_log_entry.asset_materialization.metadata["cluster_assets/fit_id"].value for r in records}
        incremental.append({"run_s": run_seconds(instance, run_id), "command_s": round(tick.wall_s, 2),
                            "peak_rss_mb": tick.peak_rss_mb,
                            "old_files_identical": {n: after[n] for n in before} == before,
                            "new_file_enriched": f"new-{k}.parquet" in after, "assigned_by_full_fit": fits == {fit_id}})
        print(f"incremental {k}: {incremental[-1]}", flush=True)
    report["incremental"] = incremental
    median = statistics.median(i["run_s"] for i in incremental)
    report["incremental_median_run_s"] = median
    report["incremental_over_full"] = round(median / report["full"]["run_s"], 4)

    if not args.skip_concurrent:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([str(bin_dir / "cluster-assets"), "run", "bench"], env=env, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        pair = [r for r in instance.get_runs(limit=2)]
        spans = [(s.start_time, s.end_time, r.run_id) for r in pair for s in instance.get_run_step_stats(r.run_id)]
        overlap = any(a0 < b1 and b0 < a1 for a0, a1, ra in spans for b0, b1, rb in spans if ra != rb)
        own_fit = all({rec.event_log_entry.asset_materialization.metadata["cluster_assets/fit_id"].value
                       for rec in instance.get_records_for_run(
                           r.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
                       if "cluster_assets/fit_id" in rec.event_log_entry.asset_materialization.metadata} == {r.run_id}
                      for r in pair)
        report["two_runs_at_once"] = {"exit_codes": codes, "wall_s": round(wall, 1), "steps_overlap": overlap,
                                      "each_run_its_own_fit": own_fit}
    print(json.dumps(report, indent=2))
    (args.workdir / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
