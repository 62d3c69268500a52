"""Synthetic documents with known topics: 384-d float32 vectors around 50 seeded centres.

Every document belongs to one centre (its ground truth). Its vector is the
centre plus isotropic Gaussian noise, L2-normalised like a sentence embedding;
its text is a few words of the centre's own vocabulary mixed with words shared
by all centres. Topic sizes are uneven (the largest about 7 times the smallest).

The collection is streamed to storage batch by batch, so a million documents
never sit in memory at once; only the ground truth (1 byte a document) is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

DIM = 384
CENTRES = 50
NOISE = 0.06  # per dimension, before normalising: a noise vector of norm ~1.2 around unit centres
TOPIC_WORDS = 12
COMMON_WORDS = 300
WORDS_PER_DOC = (4, 4)  # topic words, common words
BATCH = 50_000
COLLECTION = "bench_docs"
FEATURE = "text_embedding"

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "su", "do", "ga", "bri", "sto", "pla",
             "tre", "qua", "fen", "mor", "lin", "dax", "vel", "cor", "hup")


@dataclass(frozen=True)
class Corpus:
    """Everything that defines the data: the same seed gives the same documents, batch by batch."""

    n: int
    seed: int = 0

    def centres(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1])
        c = rng.standard_normal((CENTRES, DIM)).astype(np.float32)
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    def truth(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 2])
        weights = 1.0 / np.sqrt(np.arange(1, CENTRES + 1))
        return rng.choice(CENTRES, size=self.n, p=weights / weights.sum()).astype(np.int8)

    def vocabulary(self) -> tuple[np.ndarray, np.ndarray]:
        """(CENTRES, TOPIC_WORDS) topic words and COMMON_WORDS shared words, all distinct pseudo-words."""
        rng = np.random.default_rng([self.seed, 3])
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < CENTRES * TOPIC_WORDS + COMMON_WORDS:
            word = "".join(rng.choice(SYLLABLES, size=rng.integers(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        arr = np.array(words, dtype=object)
        return arr[: CENTRES * TOPIC_WORDS].reshape(CENTRES, TOPIC_WORDS), arr[CENTRES * TOPIC_WORDS:]

    def batches(self, batch_size: int = BATCH):
        """Yield (start, truth, vectors, texts) for consecutive slices of the collection."""
        centres, truth = self.centres(), self.truth()
        topic_words, common_words = self.vocabulary()
        n_topic, n_common = WORDS_PER_DOC
        for start in range(0, self.n, batch_size):
            t = truth[start:start + batch_size].astype(np.int64)
            rng = np.random.default_rng([self.seed, 4, start])
            X = centres[t] + rng.standard_normal((len(t), DIM), dtype=np.float32) * np.float32(NOISE)
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            topic = topic_words[t[:, None], rng.integers(0, TOPIC_WORDS, size=(len(t), n_topic))]
            common = common_words[rng.integers(0, COMMON_WORDS, size=(len(t), n_common))]
            words = np.concatenate([topic, common], axis=1)
            order = rng.permuted(np.tile(np.arange(words.shape[1]), (len(t), 1)), axis=1)
            words = np.take_along_axis(words, order, axis=1)
            texts = [" ".join(row) for row in words.tolist()]
            yield start, t, X, texts


def document_ids(start: int, count: int) -> pa.Array:
    return pa.array([f"doc-{i:07d}" for i in range(start, start + count)], pa.string())


def schema() -> pa.Schema:
    return pa.schema([("document_id", pa.string()), ("text", pa.string()), (FEATURE, pa.list_(pa.float32(), DIM))])


def write(storage, corpus: Corpus, folder: Path, reference_inputs: bool) -> dict:
    """Write the collection (streamed) and the ground truth; with ``reference_inputs`` also the
    raw ``embeddings.npy`` and ``docs.txt`` that the BERTopic reference reads."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "truth.npy", corpus.truth())
    matrix = docs = None
    if reference_inputs:
        matrix = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+", dtype=np.float32,
                                           shape=(corpus.n, DIM))
        docs = open(folder / "docs.txt", "w", encoding="utf-8")

    def tables():
        for start, _, X, texts in corpus.batches():
            if matrix is not None:
                matrix[start:start + len(X)] = X
                docs.write("\n".join(texts) + "\n")
            yield pa.table({
                "document_id": document_ids(start, len(X)),
                "text": pa.array(texts, pa.string()),
                FEATURE: pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), DIM),
            })

    try:
        rows = storage.write_collection(COLLECTION, schema(), tables())
    finally:
        if matrix is not None:
            matrix.flush()
            del matrix
            docs.close()
    info = {"n": corpus.n, "seed": corpus.seed, "rows": rows, "dim": DIM, "centres": CENTRES, "noise": NOISE,
            "reference_inputs": reference_inputs}
    (folder / "corpus.json").write_text(json.dumps(info))
    return info


def batch_table(start: int, X: np.ndarray, texts: list[str]) -> pa.Table:
    return pa.table({
        "document_id": document_ids(start, len(X)),
        "text": pa.array(texts, pa.string()),
        FEATURE: pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), DIM),
    })


def write_files(storage, corpus: Corpus, files: dict[str, tuple[int, int]], collection: str = COLLECTION) -> None:
    """Write documents [start, stop) of the corpus as each named file of the collection (a partition each),
    in one pass over the corpus; ranges are consecutive and in order."""
    pending = list(files.items())
    parts: list[pa.Table] = []
    for b_start, _, X, texts in corpus.batches():
        while pending:
            name, (start, stop) = pending[0]
            lo, hi = max(start - b_start, 0), min(stop - b_start, len(X))
            if lo < hi:
                parts.append(batch_table(b_start + lo, X[lo:hi], texts[lo:hi]))
            if stop > b_start + len(X):
                break  # this file goes on in the next batch
            storage.write_batches(schema(), parts, "collections", collection, name)
            parts, pending = [], pending[1:]


def truth_of(document_ids_array: pa.Array | pa.ChunkedArray, truth: np.ndarray) -> np.ndarray:
    """Ground-truth centre of each ``doc-NNNNNNN`` id."""
    import pyarrow.compute as pc

    rows = pc.cast(pc.utf8_slice_codeunits(document_ids_array, 4), pa.int64()).to_numpy(zero_copy_only=False)
    return truth[rows]


DEFINITION = {
    "cluster_name": "bench",
    "description": "Benchmark: kmeans k=50 and UMAP 2-D over synthetic 384-d documents with known centres.",
    "source_collection_ids": [COLLECTION],
    "feature_addresses": [f"mixpeek://text_extractor@v1/{FEATURE}"],
    "algorithm": "kmeans",
    "algorithm_config": {"num_clusters": CENTRES},
    "dimension_reduction": {"method": "umap", "components": 2},
}
