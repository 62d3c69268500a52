"""Peak memory of the labels and enrichment stages when a few documents carry a huge text.

5,000 documents (8-d vectors around 5 centres, a short text each), three of them with a
1,000,000-character text (one run-on token: the worst case for keywords, labels and
summaries). The upstream stages run once; then each variant (``labels``, ``enrichment``)
runs its stage alone in a fresh process, ``--repeats`` times in rotating order, and its
peak RSS is read from the kernel (``bench.measure.run_child``). Medians are printed and
written to bench/results/enrich_memory.json.

    .venv/bin/python bench/enrich_memory.py [--documents 5000] [--big 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.measure import run_child, tail  # noqa: E402

VARIANTS = ("labels", "enrichment")
BIG_CHARS = 1_000_000


def spec():
    from cluster_assets.spec import parse_definition

    return parse_definition({"cluster_name": "bigtext", "source_collection_ids": ["docs"],
                             "feature_addresses": ["vec"], "algorithm": "kmeans",
                             "algorithm_config": {"num_clusters": 5}})


def prepare(root: Path, documents: int, big: int) -> None:
    import numpy as np
    import pyarrow as pa

    from cluster_assets import stages
    from cluster_assets.storage import Storage

    rng = np.random.default_rng(0)
    centre = rng.integers(0, 5, size=documents)
    X = (rng.normal(size=(5, 8))[centre] + rng.normal(scale=0.1, size=(documents, 8))).astype(np.float32)
    words = ("river", "mountain", "harbour", "forest", "desert")
    texts = [f"{words[c]} report number {i}" for i, c in enumerate(centre)]
    for i in range(big):
        texts[i * (documents // big)] = "z" * BIG_CHARS
    table = pa.table({"document_id": [f"doc-{i:05d}" for i in range(documents)], "text": texts,
                      "vec": pa.array(list(X), pa.list_(pa.float32()))})
    storage = Storage(root)
    storage.write_collection("docs", table.schema, [table])
    definition = spec()
    stages.run_sample(storage, definition)
    stages.run_embeddings(storage, definition)
    stages.run_assignments(storage, definition)


def child(variant: str, root: Path) -> None:
    from cluster_assets import stages
    from cluster_assets.storage import Storage

    storage = Storage(root)
    if variant == "labels":
        result = stages.run_labels(storage, spec(), "bench")
    else:
        result = stages.run_enrichment(storage, spec(), {"docs_bigtext_enriched"})
    print(json.dumps({k: v for k, v in result.metadata.items() if isinstance(v, (int, float, str))}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--documents", type=int, default=5_000)
    p.add_argument("--big", type=int, default=3, help="documents with a 1,000,000-character text")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=HERE / "results" / "enrich_memory")
    p.add_argument("--child", choices=("prepare", *VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "prepare":
        prepare(args.root, args.documents, args.big)
        return 0
    if args.child:
        child(args.child, args.root)
        return 0

    shutil.rmtree(args.workdir, ignore_errors=True)
    root = args.workdir / "storage"
    # in its own process too: a child's ru_maxrss starts from its parent's high-water mark at fork
    done = run_child([sys.executable, __file__, "--child", "prepare", "--root", str(root),
                      "--documents", str(args.documents), "--big", str(args.big)], args.workdir / "prepare.log")
    if done.returncode != 0:
        print(f"prepare failed:\n{tail(done.log)}", file=sys.stderr)
        return 1
    peaks: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats):
        order = VARIANTS[repeat % len(VARIANTS):] + VARIANTS[:repeat % len(VARIANTS)]
        for variant in order:
            log = args.workdir / f"{variant}-{repeat}.log"
            done = run_child([sys.executable, __file__, "--child", variant, "--root", str(root)], log,
                             timeout_s=600)
            if done.returncode != 0:
                print(f"{variant} failed (exit {done.returncode}):\n{tail(log)}", file=sys.stderr)
                return 1
            peaks[variant].append(done.peak_rss_mb)
    summary = {v: {"median_peak_rss_mb": statistics.median(p), "runs_mb": p} for v, p in peaks.items()}
    summary["setup"] = {"documents": args.documents, "big_texts": args.big, "big_chars": BIG_CHARS,
                        "repeats": args.repeats}
    print(f"{args.documents} documents, {args.big} of them with a {BIG_CHARS:,}-character text; "
          f"median of {args.repeats} fresh processes:")
    for variant in VARIANTS:
        print(f"  {variant:<11} peak RSS {summary[variant]['median_peak_rss_mb']:7.1f} MB  "
              f"(runs: {', '.join(f'{x:.1f}' for x in peaks[variant])})")
    out = HERE / "results" / "enrich_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
