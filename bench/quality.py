"""Cluster and label quality of every algorithm with its defaults, on labelled data that ships offline.

Data: scikit-learn's digits (1,797 x 64, ten true classes) and the demo products
(1,200 titles in eight departments, hashed-text vectors). For each algorithm the
definition holds only the algorithm (plus ``num_clusters`` where it takes one);
it runs through the product's stages (``stages.run_plain``: sample, cluster
space, fit, assignment of every document, labels) and, side by side, through
the estimator called directly on the raw vectors with its own defaults, and
EVoC on the same vectors. Labels: the share containing a stop word or a
contraction fragment (target 0), the share of distinct labels (target 1), and
the labels themselves for a person to read.

    PYTHONPATH=. .venv/bin/python bench/quality.py [--data digits products] [--skip-direct spectral mean_shift]

Figures go to stdout (a Markdown table) and bench/results/quality.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from cluster_assets import algorithms, stages
from cluster_assets.demo import digits_table, products_table
from cluster_assets.keywords import stop_words
from cluster_assets.spec import parse_definition
from cluster_assets.stages import layout
from cluster_assets.stages.outputs import read_output
from cluster_assets.storage import Storage

DATA = {
    # name: (table, feature column, truth of each row, num_clusters)
    "digits": (digits_table, "pixels", lambda t: np.array(t.column("true_digit").to_pylist()), 10),
    "products": (products_table, "text_embedding",
                 lambda t: np.array([m["department"] for m in t.column("metadata").to_pylist()]), 8),
}


def scores(truth, labels, seconds):
    clustered = labels >= 0
    return {
        "ari": round(adjusted_rand_score(truth, labels), 3),
        "nmi": round(normalized_mutual_info_score(truth, labels), 3),
        "ari_clustered": round(adjusted_rand_score(truth[clustered], labels[clustered]), 3) if clustered.any() else 0.0,
        "clustered": round(float(clustered.mean()), 3),
        "clusters": int(len(np.unique(labels[clustered]))),
        "seconds": round(seconds, 2),
    }


def through_the_product(storage, name, algorithm, k):
    config = {"num_clusters": k} if algorithms.REGISTRY[algorithm].count_param else {}
    spec = parse_definition({"cluster_name": f"{name}_{algorithm}", "source_collection_ids": [name],
                             "feature_addresses": [DATA[name][1]], "algorithm": algorithm,
                             "algorithm_config": config})
    start = time.perf_counter()
    stages.run_plain(storage, spec, "bench", until="labels")
    seconds = time.perf_counter() - start
    assigned = read_output(storage, spec.cluster_name, layout.ASSIGNMENTS, "bench")
    labels = read_output(storage, spec.cluster_name, layout.LABELS, "bench").column("label").to_pylist()
    return np.array(assigned.column("cluster_id").to_pylist()), seconds, labels


def direct(X, algorithm, k):
    info = algorithms.REGISTRY[algorithm]
    params = {info.count_param: k} if info.count_param else {}
    start = time.perf_counter()
    estimator = info.load()(**params)
    labels = estimator.fit_predict(X) if hasattr(estimator, "fit_predict") else estimator.fit(X).labels_
    return np.asarray(labels), time.perf_counter() - start


BERTOPIC_PYTHON = Path(__file__).parent / ".bertopic-venv" / "bin" / "python"


def bertopic(X, docs, truth) -> dict | None:
    """BERTopic's default pipeline on the same vectors, in its own environment (None without it)."""
    if not BERTOPIC_PYTHON.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "embeddings.npy", X)
        np.save(Path(tmp) / "truth.npy", truth)
        (Path(tmp) / "docs.txt").write_text("\n".join(" ".join(d.split()) for d in docs), encoding="utf-8")
        out = Path(tmp) / "out.json"
        subprocess.run([str(BERTOPIC_PYTHON), str(Path(__file__).parent / "bertopic_ref.py"), tmp, str(out)],
                       check=True, capture_output=True)
        return json.loads(out.read_text())


def label_quality(labels: list[str]) -> dict:
    bad = set(stop_words())
    with_stop = [l for l in labels if any(w in bad for w in l.lower().replace("/", " ").split())]
    return {"labels": len(labels), "with_stop_word_or_fragment": round(len(with_stop) / max(len(labels), 1), 3),
            "distinct_share": round(len(set(labels)) / max(len(labels), 1), 3), "sample": labels[:8]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="+", default=list(DATA))
    parser.add_argument("--algorithms", nargs="+", default=list(algorithms.ALGORITHMS))
    # scikit-learn's own defaults that take minutes on digits (measured: spectral 4 min 46 s, mean_shift 6 min 44 s)
    parser.add_argument("--skip-direct", nargs="*", default=["spectral", "mean_shift"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp) / "storage")
        for name in args.data:
            make, column, truth_of, k = DATA[name]
            table = make()
            storage.write_collection(name, table.schema, [table])
            truth = truth_of(table)
            X = np.array(table.column(column).to_pylist(), dtype=np.float32)
            text = table.column("caption" if "caption" in table.column_names else "title").to_pylist()
            reference = bertopic(X, text, np.unique(truth, return_inverse=True)[1])
            if reference:
                print(json.dumps({"data": name, "bertopic": reference}), flush=True)
                rows.append({"data": name, "algorithm": "BERTopic (UMAP 5-d + HDBSCAN, its defaults)",
                             "product": {"ari": reference["ari"], "ari_clustered": reference["ari_clustered"],
                                         "nmi": reference["nmi"], "clustered": reference["clustered"],
                                         "clusters": reference["topics"], "seconds": reference["fit_s"]},
                             "labels": None})
            for algorithm in args.algorithms:
                labels, seconds, names = through_the_product(storage, name, algorithm, k)
                row = {"data": name, "algorithm": algorithm, "product": scores(truth, labels, seconds),
                       "labels": label_quality(names)}
                if algorithm not in args.skip_direct:
                    row["direct"] = scores(truth, *direct(X, algorithm, k))
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "quality.json").write_text(json.dumps(rows, indent=1))
    print("| data | algorithm | ARI (all / clustered) | NMI | clustered | clusters | s | direct: ARI / clustered / s "
          "| labels with a stop word | distinct labels |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        p, d, lq = r["product"], r.get("direct"), r["labels"] or {}
        direct_cell = f"{d['ari']} / {d['clustered']} / {d['seconds']}" if d else \
            ("skipped (minutes)" if r["labels"] is not None else "")
        print(f"| {r['data']} | {r['algorithm']} | {p['ari']} / {p['ari_clustered']} | {p['nmi']} | {p['clustered']} "
              f"| {p['clusters']} | {p['seconds']} | {direct_cell} | {lq.get('with_stop_word_or_fragment', '')} "
              f"| {lq.get('distinct_share', '')} |")


if __name__ == "__main__":
    main()
