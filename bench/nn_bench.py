"""Assignment without ``predict``: exact nearest labelled sample point vs a nearest-neighbour index.

    python -m bench.nn_bench --refs 20000 --dim 768 --queries 50000 [--faiss-path /tmp/faiss_pkg]

The reference points are what ``ClusterModel`` keeps for agglomerative, spectral, dbscan,
optics (up to 20k sample points); the queries are new documents from the same distribution
(unit vectors around 100 seeded centres with an uneven spread, so clusters touch). The exact
search is the one ``ClusterModel._nearest_labelled`` runs (scikit-learn's chunked
``pairwise_distances_argmin_min``, BLAS). Each index is built once (timed apart, as it would
be once per fit) and queried for k=1; agreement is the share of queries given the same
cluster label as the exact search. faiss-cpu is tried when importable (``--faiss-path`` puts a
``pip install --target`` folder on the path, so the project's environment is left alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def data(refs: int, queries: int, dim: int, centres: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centres, dim)).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    spread = rng.uniform(0.025, 0.06, centres).astype(np.float32)  # per-dimension noise: clusters of uneven width

    def draw(n):
        t = rng.integers(0, centres, n)
        X = C[t] + rng.standard_normal((n, dim), dtype=np.float32) * spread[t, None]
        return X / np.linalg.norm(X, axis=1, keepdims=True), t

    R, labels = draw(refs)
    Q, _ = draw(queries)
    return np.ascontiguousarray(R), labels, np.ascontiguousarray(Q)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refs", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--faiss-path")
    args = parser.parse_args()
    R, labels, Q = data(args.refs, args.queries, args.dim)
    report: dict = {"refs": args.refs, "dim": args.dim, "queries": args.queries}

    from sklearn.metrics import pairwise_distances_argmin_min

    (nearest, _), exact_s = timed(lambda: pairwise_distances_argmin_min(Q, R))
    exact = labels[nearest]
    report["exact"] = {"us_per_doc": round(exact_s / len(Q) * 1e6, 1)}

    def record(name, build_s, query_s, found):
        report[name] = {"build_s": round(build_s, 1), "us_per_doc": round(query_s / len(Q) * 1e6, 1),
                        "agreement": round(float((labels[found] == exact).mean()), 5),
                        "same_point": round(float((found == nearest).mean()), 5)}
        print(name, report[name], flush=True)

    print("exact", report["exact"], flush=True)
    import pynndescent

    # a first small index compiles pynndescent's numba kernels, so the build below is not their compile time
    warm = pynndescent.NNDescent(R[:2000], n_neighbors=10, random_state=0)
    warm.prepare()
    warm.query(Q[:100], k=1)
    for n_neighbors, epsilon in ((15, 0.1), (30, 0.1), (30, 0.2)):
        def build():
            index = pynndescent.NNDescent(R, n_neighbors=n_neighbors, random_state=0)
            index.prepare()
            return index

        index, build_s = timed(build)
        (found, _), query_s = timed(lambda: index.query(Q, k=1, epsilon=epsilon))
        record(f"pynndescent_k{n_neighbors}_eps{epsilon}", build_s, query_s, found[:, 0])

    if args.faiss_path:
        sys.path.insert(0, args.faiss_path)
    try:
        import faiss
    except ImportError:
        report["faiss"] = "not importable"
    else:
        for m, ef in ((32, 64), (32, 128)):
            def build():
                index = faiss.IndexHNSWFlat(args.dim, m)
                index.hnsw.efConstruction = 80
                index.add(R)
                index.hnsw.efSearch = ef
                return index

            index, build_s = timed(build)
            (_, found), query_s = timed(lambda: index.search(Q, 1))
            record(f"faiss_hnsw_m{m}_ef{ef}", build_s, query_s, found[:, 0])
        for nlist, nprobe in ((256, 8), (256, 16)):
            def build():
                quantizer = faiss.IndexFlatL2(args.dim)
                index = faiss.IndexIVFFlat(quantizer, args.dim, nlist)
                index.train(R)
                index.add(R)
                index.nprobe = nprobe
                return index

            index, build_s = timed(build)
            (_, found), query_s = timed(lambda: index.search(Q, 1))
            record(f"faiss_ivf{nlist}_probe{nprobe}", build_s, query_s, found[:, 0])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
