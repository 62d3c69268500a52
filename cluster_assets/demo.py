"""Demo collections built offline from data that ships with scikit-learn.

- ``digits``: the 1,797 handwritten digits of scikit-learn (8x8 pixels as a
  64-dimensional vector), with a caption naming the digit and its ground truth.
- ``products``: a small catalogue of product titles in eight departments,
  embedded with TF-IDF + truncated SVD (a real, if modest, text embedding), so
  that data-derived labels have words to work with.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster_assets.storage import Storage

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

DEPARTMENTS = {
    "audio": (["wireless", "noise cancelling", "over-ear", "bluetooth", "studio"], ["headphones", "earbuds", "speaker", "soundbar"]),
    "running": (["lightweight", "trail", "cushioned", "breathable", "racing"], ["running shoes", "sneakers", "trainers", "running socks"]),
    "coffee": (["espresso", "drip", "programmable", "stainless", "pour-over"], ["coffee maker", "grinder", "kettle", "espresso machine"]),
    "camping": (["waterproof", "ultralight", "four-season", "insulated", "compact"], ["tent", "sleeping bag", "backpack", "camping stove"]),
    "books": (["hardcover", "paperback", "illustrated", "bestselling", "classic"], ["novel", "cookbook", "biography", "poetry collection"]),
    "gaming": (["mechanical", "rgb", "wireless", "ergonomic", "pro"], ["gaming mouse", "keyboard", "controller", "gaming headset"]),
    "garden": (["cordless", "heavy-duty", "adjustable", "organic", "raised"], ["lawn mower", "hose", "planter", "pruning shears"]),
    "baby": (["soft", "hypoallergenic", "convertible", "portable", "organic cotton"], ["stroller", "crib", "baby monitor", "onesie"]),
}


def digits_table() -> pa.Table:
    from sklearn.datasets import load_digits

    digits = load_digits()
    vectors = digits.data.astype(np.float32)
    return pa.table({
        "document_id": [f"digit-{i:04d}" for i in range(len(vectors))],
        "caption": [f"handwritten digit {DIGIT_NAMES[t]}" for t in digits.target],  # from the ground truth
        "true_digit": pa.array(digits.target.astype(np.int32)),
        "pixels": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
    })


def products_table(per_department: int = 150, seed: int = 0) -> pa.Table:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(seed)
    titles, departments, prices = [], [], []
    for department, (adjectives, nouns) in DEPARTMENTS.items():
        for _ in range(per_department):
            words = [rng.choice(adjectives), rng.choice(nouns)]
            if rng.random() < 0.5:
                words.insert(0, rng.choice(adjectives))
            titles.append(" ".join(words))
            departments.append(department)
            prices.append(round(float(rng.uniform(5, 400)), 2))
    order = rng.permutation(len(titles))
    titles = [titles[i] for i in order]
    departments = [departments[i] for i in order]
    prices = [prices[i] for i in order]
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(titles)
    vectors = TruncatedSVD(n_components=32, random_state=seed).fit_transform(tfidf).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    return pa.table({
        "document_id": [f"prod-{i:05d}" for i in range(len(titles))],
        "title": titles,
        "metadata": pa.array([{"department": d, "price": p} for d, p in zip(departments, prices)]),
        "text_embedding": pa.array(list(vectors), pa.list_(pa.float32())),
    })


DEMO_COLLECTIONS = {"digits": digits_table, "products": products_table}


def write_demo_collections(storage: Storage, overwrite: bool = False) -> dict[str, int]:
    written = {}
    for collection_id, build in DEMO_COLLECTIONS.items():
        if storage.collection_exists(collection_id) and not overwrite:
            continue
        table = build()
        written[collection_id] = storage.write_collection(collection_id, table.schema, [table])
    return written
