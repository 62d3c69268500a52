"""The BERTopic reference, run with the benchmark's own BERTopic environment (see README).

    bench/.bertopic-venv/bin/python bench/bertopic_ref.py DATA_DIR OUT_JSON

BERTopic's default pipeline (UMAP to 5-D, HDBSCAN, c-TF-IDF) on the same
precomputed embeddings: ``BERTopic().fit_transform(docs, embeddings=X)``. No
embedding model is loaded (the embeddings are given) and the hub is kept offline.
Imports only numpy, scikit-learn and bertopic: nothing of cluster_assets.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(data_dir: str, out_json: str) -> None:
    start = time.perf_counter()
    import numpy as np
    from bertopic import BERTopic
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    imports_s = time.perf_counter() - start
    X = np.load(os.path.join(data_dir, "embeddings.npy"))
    with open(os.path.join(data_dir, "docs.txt"), encoding="utf-8") as f:
        docs = f.read().splitlines()
    truth = np.load(os.path.join(data_dir, "truth.npy"))
    assert len(docs) == len(X) == len(truth), (len(docs), len(X), len(truth))
    t0 = time.perf_counter()
    topics, _ = BERTopic().fit_transform(docs, embeddings=X)
    fit_s = time.perf_counter() - t0
    topics = np.asarray(topics)
    report = {
        "imports_s": round(imports_s, 3),
        "fit_s": round(fit_s, 3),
        "topics": int(len(set(topics.tolist()) - {-1})),
        "noise_share": round(float((topics == -1).mean()), 4),
        # Noise (-1) counts as one more label, as it does for our assignments.
        "nmi": round(float(normalized_mutual_info_score(truth, topics)), 4),
        "ari": round(float(adjusted_rand_score(truth, topics)), 4),
        "ari_clustered": round(float(adjusted_rand_score(truth[topics >= 0], topics[topics >= 0])), 4)
        if (topics >= 0).any() else 0.0,
        "clustered": round(float((topics >= 0).mean()), 4),
        "total_s": round(time.perf_counter() - start, 3),
    }
    with open(out_json, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
