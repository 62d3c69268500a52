"""Speed and memory of a cluster definition end to end, against two references.

    .venv/bin/python bench/run.py --sizes 10000 100000 --repeats 3

For each N: writes N synthetic documents (bench/data.py) as a collection, then,
every repeat, in fresh processes and in rotating order:
  dagster   the real ``dagster asset materialize`` command on a temporary SQLite
            instance (DAGSTER_HOME), definition kmeans k=50 + UMAP 2-D; per-asset
            figures are read back from the instance's materialization events;
  plain     the same stage functions called directly (bench/plain.py), no Dagster;
  bertopic  BERTopic's default pipeline on the same embeddings, in its own venv.
Prints a table of medians and writes every figure as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import data  # noqa: E402
from bench.measure import run_child, tail  # noqa: E402

from cluster_assets.stages import STAGE_NAMES as STAGES  # noqa: E402
BERTOPIC_PYTHON = HERE / ".bertopic-venv" / "bin" / "python"
TARGET_SPEEDUP = 3.0
TARGET_NMI = 0.95
TARGET_1M_S = 300.0
TARGET_OVERHEAD = 1.10


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="numbers of documents")
    p.add_argument("--repeats", type=int, default=3, help="runs of each variant per size; medians are reported")
    p.add_argument("--only", nargs="+", choices=("dagster", "plain", "bertopic"),
                   default=["dagster", "plain", "bertopic"], help="variants to run")
    p.add_argument("--bertopic-max", type=int, default=100_000,
                   help="largest N given to BERTopic (above it BERTopic is skipped and the table says so)")
    p.add_argument("--bertopic-timeout", type=float, default=1800, help="seconds before a BERTopic run is killed")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a dagster/plain run is killed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=HERE / "results" / "work",
                   help="where the data, storage roots and logs go (git-ignored)")
    p.add_argument("--keep-data", action="store_true", help="keep each size's data after its runs")
    return p.parse_args(argv)


# --- one size ------------------------------------------------------------------------------------
class Case:
    def __init__(self, n: int, args: argparse.Namespace):
        self.n = n
        self.args = args
        self.folder = args.workdir / f"n{n}"
        self.data_dir = self.folder / "data"
        self.storage_root = self.folder / "storage"
        self.definitions_dir = self.folder / "clusters"
        self.logs = self.folder / "logs"
        self.with_bertopic = "bertopic" in args.only and n <= args.bertopic_max and BERTOPIC_PYTHON.exists()

    def prepare(self) -> dict:
        from cluster_assets.storage import Storage

        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.definitions_dir.mkdir(parents=True)
        (self.definitions_dir / "bench.json").write_text(json.dumps(data.DEFINITION, indent=2))
        start = time.perf_counter()
        info = data.write(Storage(str(self.storage_root)), data.Corpus(self.n, self.args.seed), self.data_dir,
                          reference_inputs=self.with_bertopic)
        info["generate_s"] = round(time.perf_counter() - start, 1)
        import numpy as np

        self.truth = np.load(self.data_dir / "truth.npy")
        return info

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "CLUSTER_ASSETS_STORAGE": str(self.storage_root),
            "CLUSTER_ASSETS_DEFINITIONS_DIR": str(self.definitions_dir),
            "PYTHONPATH": str(REPO),
        })
        env.update(extra)
        return env

    def nmi(self) -> tuple[float, int]:
        """NMI of the latest assignments against the known centres, and how many documents were assigned."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from sklearn.metrics import normalized_mutual_info_score

        import json

        fit = json.loads((self.storage_root / "assets" / "bench" / "current.json").read_text())["fit_id"]
        files = sorted((self.storage_root / "assets" / "bench" / "fits" / fit / "files").glob("*/*/assignments.parquet"))
        table = pa.concat_tables(pq.read_table(f).replace_schema_metadata(None) for f in files)
        truth = data.truth_of(table.column("document_id"), self.truth)
        return round(float(normalized_mutual_info_score(truth, table.column("cluster_id").to_numpy())), 4), len(table)

    # --- the three variants -----------------------------------------------------------------------
    def run_dagster(self, repeat: int) -> dict:
        import dagster as dg

        # One instance per size, created before any timing: a user's instance already exists, and
        # creating a fresh SQLite instance (schemas, migrations) costs about 1.5 s that no real run pays.
        home = self.dagster_home()
        # the full-run command: one Dagster run over every file of the definition
        cmd = [str(Path(sys.executable).parent / "cluster-assets"), "run", "bench"]
        child = run_child(cmd, self.logs / f"dagster-{repeat}.log", self.env(DAGSTER_HOME=str(home)),
                          cwd=REPO, timeout_s=self.args.timeout)
        out = {"wall_s": child.wall_s, "peak_rss_mb": child.peak_rss_mb, "ok": child.returncode == 0}
        if child.returncode != 0:
            out["error"] = tail(child.log)
            return out
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            assets, run_id = {}, None
            for stage in STAGES:
                event = instance.get_latest_materialization_event(dg.AssetKey(["bench", stage]))
                metadata = event.asset_materialization.metadata
                run_id = event.run_id
                assets[stage] = {
                    "duration_s": metadata["duration_s"].value,
                    "peak_rss_mb": metadata["peak_rss_mb"].value,
                    **{k: v.value for k, v in metadata.items()
                       if k.endswith("_s") and k != "duration_s" and isinstance(v.value, float)},
                }
            for step in instance.get_run_step_stats(run_id):
                stage = step.step_key.split("__")[-1]
                if stage in assets and step.end_time and step.start_time:
                    assets[stage]["step_s"] = round(step.end_time - step.start_time, 3)
            stats = instance.get_run_stats(run_id)
            out["run_s"] = round(stats.end_time - stats.start_time, 3)
            out["assets"] = assets
            out["run_id"] = run_id
        finally:
            instance.dispose()
        out["nmi"], out["assigned"] = self.nmi()
        return out

    def dagster_home(self) -> Path:
        import dagster as dg

        home = self.folder / "dagster_home"
        if not home.exists():
            home.mkdir(parents=True)
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            instance = dg.DagsterInstance.from_config(str(home))
            instance.get_runs(limit=1)
            instance.dispose()
        return home

    def run_plain(self, repeat: int) -> dict:
        report_path = self.logs / f"plain-{repeat}.json"
        cmd = [sys.executable, "-m", "bench.plain", str(self.definitions_dir), str(self.storage_root), str(report_path)]
        child = run_child(cmd, self.logs / f"plain-{repeat}.log", self.env(), cwd=REPO, timeout_s=self.args.timeout)
        out = {"wall_s": child.wall_s, "peak_rss_mb": child.peak_rss_mb, "ok": child.returncode == 0}
        if child.returncode != 0:
            out["error"] = tail(child.log)
            return out
        report = json.loads(report_path.read_text())
        out["stages"] = report["stages"]
        out["imports_s"] = report["imports_s"]
        out["nmi"], out["assigned"] = self.nmi()
        return out

    def run_bertopic(self, repeat: int) -> dict:
        report_path = self.logs / f"bertopic-{repeat}.json"
        cmd = [str(BERTOPIC_PYTHON), str(HERE / "bertopic_ref.py"), str(self.data_dir), str(report_path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        child = run_child(cmd, self.logs / f"bertopic-{repeat}.log", env, cwd=HERE,
                          timeout_s=self.args.bertopic_timeout)
        out = {"wall_s": child.wall_s, "peak_rss_mb": child.peak_rss_mb, "ok": child.returncode == 0}
        if child.timed_out:
            out["error"] = f"killed after {self.args.bertopic_timeout:.0f} s"
        elif child.returncode != 0:
            out["error"] = tail(child.log)
        else:
            out.update(json.loads(report_path.read_text()))
        return out

    def variants(self) -> list[str]:
        chosen = [v for v in ("dagster", "plain", "bertopic") if v in self.args.only]
        if not self.with_bertopic and "bertopic" in chosen:
            chosen.remove("bertopic")
        return chosen


# --- summaries -----------------------------------------------------------------------------------
def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(n: int, runs: list[dict], variants: list[str]) -> dict:
    ok = {v: [r[v] for r in runs if r.get(v, {}).get("ok")] for v in variants}
    med: dict = {}
    for v, items in ok.items():
        med[v] = {k: median(i.get(k) for i in items)
                  for k in ("wall_s", "run_s", "peak_rss_mb", "nmi", "fit_s", "imports_s", "noise_share", "topics")
                  if any(i.get(k) is not None for i in items)}
        med[v]["runs_ok"] = len(items)
    if ok.get("dagster"):
        med["dagster"]["assets"] = {
            s: {k: median(i["assets"][s].get(k) for i in ok["dagster"])
                for k in ("step_s", "duration_s", "peak_rss_mb", "fit_s", "transform_s", "assign_s", "keywords_s")
                if any(i["assets"][s].get(k) is not None for i in ok["dagster"])}
            for s in STAGES}
    if ok.get("plain"):
        med["plain"]["stages"] = {
            s: {k: median(i["stages"][s].get(k) for i in ok["plain"]) for k in ("wall_s", "peak_rss_mb")}
            for s in STAGES}
    ratios: dict = {}
    d, p, b = (med.get(v, {}).get("wall_s") for v in ("dagster", "plain", "bertopic"))
    if d and p:
        ratios["dagster_over_plain"] = round(d / p, 3)
        # The ratio of medians can hide noise: also the median of each repeat's own ratio.
        paired = [r["dagster"]["wall_s"] / r["plain"]["wall_s"] for r in runs
                  if r.get("dagster", {}).get("ok") and r.get("plain", {}).get("ok")]
        ratios["dagster_over_plain_paired"] = median(paired)
    if d and b:
        ratios["bertopic_over_dagster"] = round(b / d, 3)
    matrix_mb = n * data.DIM * 4 / 1e6
    targets: dict = {}
    dag = med.get("dagster", {})
    if n == 100_000:
        if "bertopic_over_dagster" in ratios:
            targets["3x_faster_than_bertopic"] = ratios["bertopic_over_dagster"] >= TARGET_SPEEDUP
        if dag.get("nmi") is not None:
            targets["nmi_at_least_0.95"] = dag["nmi"] >= TARGET_NMI
        if "dagster_over_plain" in ratios:
            targets["dagster_overhead_under_10pct"] = ratios["dagster_over_plain"] < TARGET_OVERHEAD
    if n == 1_000_000 and dag.get("wall_s"):
        targets["within_5_minutes"] = dag["wall_s"] <= TARGET_1M_S
        targets["peak_under_2x_matrix"] = dag["peak_rss_mb"] < 2 * matrix_mb
    return {"median": med, "ratios": ratios, "targets": targets, "matrix_mb": round(matrix_mb, 1)}


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    n, med, ratios = result["n"], result["summary"]["median"], result["summary"]["ratios"]
    print(f"\n== N = {n:,} documents  ({result['repeats']} repeats, medians; float32 matrix "
          f"{result['summary']['matrix_mb']:.0f} MB; load avg at start {result['load_before']}) ==")
    dag, plain, bert = med.get("dagster", {}), med.get("plain", {}), med.get("bertopic", {})
    print(f"{'asset':<22}{'dagster step s':>15}{'body s':>9}{'peak MB':>9}  |{'plain s':>9}{'peak MB':>9}")
    for s in STAGES:
        a = dag.get("assets", {}).get(s, {})
        q = plain.get("stages", {}).get(s, {})
        print(f"{s:<22}{fmt(a.get('step_s'), '.2f'):>15}{fmt(a.get('duration_s'), '.2f'):>9}"
              f"{fmt(a.get('peak_rss_mb'), '.0f'):>9}  |{fmt(q.get('wall_s'), '.2f'):>9}{fmt(q.get('peak_rss_mb'), '.0f'):>9}")
    print(f"{'variant':<22}{'process s':>15}{'peak MB':>9}{'NMI':>9}")
    for name, m in (("dagster (CLI)", dag), ("plain script", plain), ("bertopic", bert)):
        if m:
            print(f"{name:<22}{fmt(m.get('wall_s'), '.2f'):>15}{fmt(m.get('peak_rss_mb'), '.0f'):>9}"
                  f"{fmt(m.get('nmi'), '.4f'):>9}" + (f"   (Dagster run {m['run_s']:.2f} s)" if m.get("run_s") else "")
                  + (f"   (fit {m['fit_s']:.2f} s, {m.get('topics'):.0f} topics, noise {m.get('noise_share'):.1%})"
                     if m.get("fit_s") else ""))
    if result.get("bertopic_skipped"):
        print(f"bertopic: skipped ({result['bertopic_skipped']})")
    if ratios:
        print("ratios: " + ", ".join(f"{k} = {v:.3f}" for k, v in ratios.items()))
    if result["summary"]["targets"]:
        print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in result["summary"]["targets"].items()))
    failed = [f"{v} repeat {r['repeat']}: {r[v].get('error', '')[-300:]}" for r in result["runs"] for v in r
              if isinstance(r[v], dict) and r[v].get("ok") is False]
    for line in failed:
        print("FAILED " + line)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    results_dir = HERE / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {
        "started": stamp,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "note": "shared with other work while measured: timings are noisy, ratios are side by side"},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sizes": [],
    }
    out_path = results_dir / f"bench-{stamp}.json"
    for n in args.sizes:
        case = Case(n, args)
        print(f"generating {n:,} documents ...", flush=True)
        info = case.prepare()
        result = {"n": n, "repeats": args.repeats, "data": info,
                  "load_before": [round(x, 2) for x in os.getloadavg()], "runs": []}
        if "bertopic" in args.only and not case.with_bertopic:
            result["bertopic_skipped"] = (f"N above --bertopic-max {args.bertopic_max}" if n > args.bertopic_max
                                          else f"no BERTopic environment at {BERTOPIC_PYTHON} (see bench/README.md)")
        variants = case.variants()
        for repeat in range(args.repeats):
            order = variants[repeat % len(variants):] + variants[: repeat % len(variants)]
            run = {"repeat": repeat, "order": order}
            for variant in order:
                print(f"  N={n:,} repeat {repeat + 1}/{args.repeats}: {variant} ...", end=" ", flush=True)
                run[variant] = getattr(case, f"run_{variant}")(repeat)
                r = run[variant]
                print(f"{r['wall_s']:.1f} s, peak {r['peak_rss_mb']:.0f} MB"
                      + (f", NMI {r['nmi']:.4f}" if r.get("nmi") is not None else "")
                      + ("" if r["ok"] else " FAILED"), flush=True)
            result["runs"].append(run)
            result["summary"] = summarize(n, result["runs"], variants)
            out_path.write_text(json.dumps(report | {"sizes": report["sizes"] + [result]}, indent=2))
        result["load_after"] = [round(x, 2) for x in os.getloadavg()]
        report["sizes"].append(result)
        out_path.write_text(json.dumps(report, indent=2))
        print_table(result)
        if not args.keep_data:
            shutil.rmtree(case.folder, ignore_errors=True)
    shutil.copyfile(out_path, results_dir / "latest.json")
    print(f"\nresults: {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
