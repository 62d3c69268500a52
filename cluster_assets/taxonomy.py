"""Taxonomies: chosen clusters of a run, promoted to named, lasting nodes that classify new documents.

A taxonomy lives under ``<storage>/taxonomies/<name>/``:

    nodes.parquet     one row per node: node_id, parent_id, level, label, summary, keywords,
                      centroid, count, source_cluster, source_run_id, source_cluster_id, promoted_at
    taxonomy.json     name, vector dimension, feature addresses, and every promotion made

Promotion takes a run's centroids artifact (and its hierarchy artifact, when the
run has one, for the parents of the chosen clusters). Nodes promoted earlier
from the same cluster definition are replaced; nodes from other definitions stay.

Stability: a cluster whose membership changed by more than ``max_change``
between the run and the run before it (1 - Jaccard overlap with its best
matching cluster of that run) is refused, with the figures, unless forced.

Classification: a document goes to the leaf node whose centroid is most
cosine-similar to its vector, or to none when that similarity is below the
threshold. No Dagster import.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets.spec import check_safe_id

NODES = "nodes.parquet"
MANIFEST = "taxonomy.json"
HIERARCHY_ARTIFACT = "hierarchy.parquet"
DEFAULT_MAX_CHANGE = 0.2
DEFAULT_THRESHOLD = 0.5

NODE_SCHEMA_FIELDS = [
    ("node_id", pa.string()), ("parent_id", pa.string()), ("level", pa.int16()), ("label", pa.string()),
    ("summary", pa.string()), ("keywords", pa.list_(pa.string())), ("count", pa.int64()),
    ("is_leaf", pa.bool_()), ("source_cluster", pa.string()), ("source_run_id", pa.string()),
    ("source_cluster_id", pa.int32()), ("promoted_at", pa.string()),
]


class TaxonomyError(ValueError):
    """A promotion or classification that cannot be done as asked; the message says why and what to do."""


class UnstableClusters(TaxonomyError):
    def __init__(self, message: str, changes: dict[int, "MembershipChange"]):
        super().__init__(message)
        self.changes = changes


def taxonomy_parts(name: str, *rest: str) -> tuple[str, ...]:
    check_safe_id(name, "taxonomy name")
    return ("taxonomies", name, *rest)


# --- stability --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MembershipChange:
    cluster_id: int
    previous_cluster_id: int | None  # best match in the previous run (None: nothing in common)
    jaccard: float

    @property
    def change(self) -> float:
        return 1.0 - self.jaccard


def membership_changes(previous: pa.Table, current: pa.Table) -> dict[int, MembershipChange]:
    """For each cluster of ``current``: its best-matching cluster of ``previous`` by Jaccard overlap.

    Both tables hold ``document_id`` and ``cluster_id`` (a run's members artifact), and, when both
    hold it, ``collection_id``: a document is then (collection, id), as two sources may share an id.
    Documents that are in only one run count against the overlap: a cluster
    that gained or lost many documents changed.
    """
    import pandas as pd

    keys = [k for k in ("collection_id", "document_id")
            if k in previous.column_names and k in current.column_names]

    def frame(table: pa.Table, cluster: str) -> pd.DataFrame:
        return pd.DataFrame({k: table.column(k).to_pandas().astype(str) for k in keys}
                            | {cluster: table.column("cluster_id").to_numpy(zero_copy_only=False)})

    prev, cur = frame(previous, "p"), frame(current, "c")
    prev_sizes = prev[prev.p >= 0].p.value_counts()
    cur_sizes = cur[cur.c >= 0].c.value_counts()
    both = cur[cur.c >= 0].merge(prev[prev.p >= 0], on=keys)
    overlap = both.groupby(["c", "p"]).size().rename("n").reset_index()
    out: dict[int, MembershipChange] = {}
    if len(overlap):
        overlap["jaccard"] = overlap.n / (overlap.c.map(cur_sizes) + overlap.p.map(prev_sizes) - overlap.n)
        best = overlap.sort_values(["c", "jaccard", "p"], ascending=[True, False, True]).drop_duplicates("c")
        for row in best.itertuples():
            out[int(row.c)] = MembershipChange(int(row.c), int(row.p), float(row.jaccard))
    for c in cur_sizes.index:
        out.setdefault(int(c), MembershipChange(int(c), None, 0.0))
    return out


# --- promotion --------------------------------------------------------------------------------

@dataclass
class Promotion:
    taxonomy: str
    cluster_name: str
    run_id: str
    promoted: list[int]
    parents: int
    nodes_total: int
    uri: str
    changes: dict[int, MembershipChange] = field(default_factory=dict)
    previous_run_id: str | None = None
    forced: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "source_cluster": self.cluster_name,
            "source_run_id": self.run_id,
            "promoted_clusters": len(self.promoted),
            "parent_nodes": self.parents,
            "nodes": self.nodes_total,
            "compared_with_run": self.previous_run_id or "none",
            "max_membership_change": round(max((self.changes[c].change for c in self.promoted
                                                if c in self.changes), default=0.0), 4),
        }


def choose_clusters(centroids: pa.Table, clusters: list[int] | None, min_size: int | None) -> list[int]:
    available = dict(zip(centroids.column("cluster_id").to_pylist(), centroids.column("count").to_pylist()))
    if clusters:
        unknown = [c for c in clusters if c not in available]
        if unknown:
            raise TaxonomyError(f"--clusters: no cluster {', '.join(map(str, unknown))} in this run; "
                                f"clusters: {', '.join(map(str, sorted(available)))}")
        chosen = list(dict.fromkeys(clusters))
    else:
        chosen = sorted(available)
    if min_size is not None:
        chosen = [c for c in chosen if available[c] >= min_size]
    if not chosen:
        raise TaxonomyError(f"no cluster of this run has at least {min_size} documents"
                            if min_size is not None else "this run has no clusters to promote")
    return chosen


def _matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(arr.type):
        dim = arr.type.list_size
    else:
        dim = len(arr[0].as_py()) if len(arr) else 0
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(arr), dim)


def node_id(cluster_name: str, run_id: str, cluster_id: int, parent: bool = False) -> str:
    return f"{cluster_name}:{run_id[:8]}:{'p' if parent else ''}{cluster_id}"


def build_nodes(cluster_name: str, run_id: str, centroids: pa.Table, chosen: list[int],
                hierarchy: pa.Table | None, now: str) -> tuple[list[dict], np.ndarray]:
    """Node rows (without centroids) and their centroid matrix: chosen clusters plus their ancestors."""
    rows, vectors = [], []
    by_id = {c: i for i, c in enumerate(centroids.column("cluster_id").to_pylist())}
    C = _matrix(centroids.column("centroid"))
    columns = set(centroids.column_names)
    parent_of: dict[int, int] = {}
    levels: dict[int, int] = {}
    if hierarchy is not None:
        parent_of = dict(zip(hierarchy.column("node_id").to_pylist(), hierarchy.column("parent_id").to_pylist()))
        levels = dict(zip(hierarchy.column("node_id").to_pylist(), hierarchy.column("level").to_pylist()))
    ancestors: list[int] = []
    for c in chosen:
        p = parent_of.get(c, -1)
        while p is not None and p >= 0 and p not in ancestors:
            ancestors.append(p)
            p = parent_of.get(p, -1)

    def get(col: str, i: int, default=None):
        return centroids.column(col)[i].as_py() if col in columns else default

    for c in chosen:
        i = by_id[c]
        p = parent_of.get(c, -1)
        rows.append({
            "node_id": node_id(cluster_name, run_id, c), "parent_id": node_id(cluster_name, run_id, p, True)
            if p is not None and p >= 0 else None,
            "level": int(levels.get(c, 0)), "label": get("label", i) or f"Cluster {c}",
            "summary": get("summary", i) or "", "keywords": list(get("keywords", i) or []),
            "count": int(get("count", i) or 0), "is_leaf": True, "source_cluster": cluster_name,
            "source_run_id": run_id, "source_cluster_id": int(c), "promoted_at": now,
        })
        vectors.append(C[i])
    if ancestors and hierarchy is not None:
        H = _matrix(hierarchy.column("centroid"))
        h_index = {n: i for i, n in enumerate(hierarchy.column("node_id").to_pylist())}
        hcols = set(hierarchy.column_names)
        for a in sorted(ancestors):
            i = h_index[a]
            p = parent_of.get(a, -1)

            def hget(col: str, default=None):
                return hierarchy.column(col)[i].as_py() if col in hcols else default

            rows.append({
                "node_id": node_id(cluster_name, run_id, a, True),
                "parent_id": node_id(cluster_name, run_id, p, True) if p is not None and p >= 0 else None,
                "level": int(levels.get(a, 0)), "label": hget("label") or f"Group {a}",
                "summary": hget("summary") or "", "keywords": list(hget("keywords") or []),
                "count": int(hget("count") or 0), "is_leaf": False, "source_cluster": cluster_name,
                "source_run_id": run_id, "source_cluster_id": int(a), "promoted_at": now,
            })
            vectors.append(H[i])
    return rows, np.array(vectors, dtype=np.float32).reshape(len(rows), C.shape[1])


def nodes_table(rows: list[dict], vectors: np.ndarray) -> pa.Table:
    columns = {name: pa.array([r[name] for r in rows], type_) for name, type_ in NODE_SCHEMA_FIELDS}
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    columns["centroid"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), dim)
    return pa.table(columns)


def promote(storage, cluster_name: str, run_id: str, taxonomy: str, *, clusters: list[int] | None = None,
            min_size: int | None = None, previous_run_id: str | None = None,
            max_change: float = DEFAULT_MAX_CHANGE, force: bool = False,
            feature_addresses: list[str] | None = None) -> Promotion:
    """Turn the chosen clusters of ``run_id`` into nodes of ``taxonomy`` (created if new)."""
    check_safe_id(cluster_name, "cluster name")
    check_safe_id(run_id, "run id")
    run = ("artifacts", cluster_name, run_id)
    if not storage.exists(*run, "centroids.parquet"):
        raise TaxonomyError(f"run {run_id!r} of {cluster_name!r} has no centroids artifact at "
                            f"{storage.uri(*run, 'centroids.parquet')}: materialize {cluster_name}/labels")
    centroids = storage.read_table(*run, "centroids.parquet")
    chosen = choose_clusters(centroids, clusters, min_size)
    notes: list[str] = []
    changes: dict[int, MembershipChange] = {}
    forced: list[int] = []
    if previous_run_id and storage.exists("artifacts", cluster_name, previous_run_id, "members.parquet") \
            and storage.exists(*run, "members.parquet"):
        def members(*parts: str) -> pa.Table:
            parquet = storage.parquet_file(*parts)
            names = parquet.schema_arrow.names
            return parquet.read(columns=[c for c in ("document_id", "cluster_id", "collection_id") if c in names])

        changes = membership_changes(members("artifacts", cluster_name, previous_run_id, "members.parquet"),
                                     members(*run, "members.parquet"))
        unstable = [c for c in chosen if changes.get(c) and changes[c].change > max_change]
        if unstable and not force:
            lines = [f"cluster {c}: {changes[c].change:.0%} of its membership changed since run "
                     f"{previous_run_id} (best match there: "
                     f"{'none' if changes[c].previous_cluster_id is None else changes[c].previous_cluster_id})"
                     for c in unstable[:20]]
            raise UnstableClusters(
                f"refusing {len(unstable)} unstable clusters (more than {max_change:.0%} of membership changed "
                f"between the last two runs):\n  " + "\n  ".join(lines) +
                "\nleave them out with --clusters, raise --max-change, or promote anyway with --force", changes)
        forced = unstable
    else:
        notes.append("no earlier run with members to compare with: stability not checked")
    hierarchy = storage.read_table(*run, HIERARCHY_ARTIFACT) if storage.exists(*run, HIERARCHY_ARTIFACT) else None
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows, vectors = build_nodes(cluster_name, run_id, centroids, chosen, hierarchy, now)
    new = nodes_table(rows, vectors)

    manifest = read_manifest(storage, taxonomy) or {"name": taxonomy, "created_at": now, "promotions": []}
    dim = int(vectors.shape[1])
    if manifest.get("dimension") not in (None, dim):
        raise TaxonomyError(f"taxonomy {taxonomy!r} holds {manifest['dimension']}-dimensional centroids; "
                            f"run {run_id} of {cluster_name!r} has {dim}: a taxonomy lives in one vector space")
    if storage.exists(*taxonomy_parts(taxonomy, NODES)):
        old = storage.read_table(*taxonomy_parts(taxonomy, NODES))
        kept = old.filter(pc.not_equal(old.column("source_cluster"), cluster_name))
        if kept.num_rows:
            notes.append(f"kept {kept.num_rows} nodes promoted from other definitions")
        replaced = old.num_rows - kept.num_rows
        if replaced:
            notes.append(f"replaced {replaced} nodes promoted earlier from {cluster_name!r}")
        new = pa.concat_tables([kept.select(new.column_names).cast(new.schema), new])
    uri = storage.write_table(new, *taxonomy_parts(taxonomy, NODES))
    manifest.update({"dimension": dim, "updated_at": now})
    if feature_addresses:
        manifest.setdefault("feature_addresses", {})[cluster_name] = list(feature_addresses)
    manifest["promotions"].append({
        "at": now, "cluster": cluster_name, "run_id": run_id, "clusters": chosen,
        "compared_with_run": previous_run_id, "forced": forced, "max_change": max_change,
    })
    storage.write_bytes(json.dumps(manifest, indent=2).encode(), *taxonomy_parts(taxonomy, MANIFEST))
    parents = sum(1 for r in rows if not r["is_leaf"])
    return Promotion(taxonomy, cluster_name, run_id, chosen, parents, new.num_rows, uri, changes,
                     previous_run_id, forced, notes)


# --- reading and classifying ------------------------------------------------------------------

def read_manifest(storage, name: str) -> dict | None:
    parts = taxonomy_parts(name, MANIFEST)
    if not storage.exists(*parts):
        return None
    return json.loads(storage.read_bytes(*parts))


def list_taxonomies(storage) -> list[str]:
    return [n for n in storage.list_dir("taxonomies") if not n.startswith(("_", "."))
            and storage.exists("taxonomies", n, NODES)]


def stored_taxonomy_sources(storage) -> dict[str, list[str]]:
    """Every stored taxonomy and the cluster definitions its nodes were promoted from."""
    out = {}
    for name in list_taxonomies(storage):
        manifest = read_manifest(storage, name) or {}
        out[name] = sorted({p["cluster"] for p in manifest.get("promotions", [])})
    return out


@dataclass
class Taxonomy:
    name: str
    nodes: pa.Table
    manifest: dict

    @property
    def leaves(self) -> pa.Table:
        return self.nodes.filter(self.nodes.column("is_leaf"))

    @property
    def dimension(self) -> int:
        return int(self.manifest.get("dimension") or self.nodes.schema.field("centroid").type.list_size)

    def sources(self) -> list[str]:
        return sorted(set(self.nodes.column("source_cluster").to_pylist()))


def load_taxonomy(storage, name: str) -> Taxonomy:
    parts = taxonomy_parts(name, NODES)
    if not storage.exists(*parts):
        known = list_taxonomies(storage)
        raise TaxonomyError(f"no taxonomy {name!r} at {storage.uri(*taxonomy_parts(name))}; "
                            + (f"taxonomies: {', '.join(known)}" if known else
                               "promote clusters first: cluster-assets taxonomy promote CLUSTER --taxonomy NAME"))
    return Taxonomy(name, storage.read_table(*parts), read_manifest(storage, name) or {})


class Classifier:
    """Nearest leaf centroid by cosine similarity, with a threshold under which a document stays unassigned."""

    def __init__(self, taxonomy: Taxonomy, threshold: float = DEFAULT_THRESHOLD):
        leaves = taxonomy.leaves
        if not leaves.num_rows:
            raise TaxonomyError(f"taxonomy {taxonomy.name!r} has no nodes to classify into")
        C = _matrix(leaves.column("centroid")).astype(np.float64)
        norms = np.linalg.norm(C, axis=1, keepdims=True)
        self.centroids = C / np.where(norms == 0, 1, norms)
        self.node_ids = np.array(leaves.column("node_id").to_pylist(), dtype=object)
        self.labels = np.array(leaves.column("label").to_pylist(), dtype=object)
        self.threshold = threshold
        self.name = taxonomy.name

    @property
    def dimension(self) -> int:
        return self.centroids.shape[1]

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index of the nearest leaf or -1 under the threshold, its cosine similarity) per row of X."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.dimension:
            raise TaxonomyError(f"taxonomy {self.name!r} has {self.dimension}-dimensional centroids; "
                                f"the documents have {X.shape[-1]} dimensions: classify with the features "
                                f"the taxonomy was built from")
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        sim = (X / np.where(norms == 0, 1, norms)) @ self.centroids.T
        best = sim.argmax(axis=1)
        value = sim[np.arange(len(X)), best]
        return np.where(value >= self.threshold, best, -1), value

    def classify(self, X: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
        """Arrow columns taxonomy_node_id, taxonomy_label (null when unassigned), taxonomy_similarity."""
        index, value = self.scores(X)
        unassigned = index < 0
        take = np.clip(index, 0, None)
        return (pa.array(self.node_ids[take].tolist(), pa.string(), mask=unassigned),
                pa.array(self.labels[take].tolist(), pa.string(), mask=unassigned),
                pa.array(value.astype(np.float32), pa.float32()))


class DocumentClasses:
    """Every document's taxonomy node, in the order of the matrices classified (the assignments' order)."""

    def __init__(self, classifier: Classifier, matrices):
        indices, similarities = [], []
        for X in matrices:
            index, value = classifier.scores(X)
            indices.append(index.astype(np.int32))
            similarities.append(value.astype(np.float32))
        self.classifier = classifier
        self.index = np.concatenate(indices) if indices else np.zeros(0, np.int32)
        self.similarity = np.concatenate(similarities) if similarities else np.zeros(0, np.float32)

    def columns(self, rows: np.ndarray, found: np.ndarray) -> dict[str, pa.Array]:
        """taxonomy_node_id, taxonomy_label and taxonomy_similarity for documents at ``rows`` (null where not found
        or below the threshold)."""
        at = np.clip(rows, 0, None)
        index = np.where(found, self.index[at] if len(self.index) else -1, -1)
        unassigned = index < 0
        take = np.clip(index, 0, None)
        return {
            "taxonomy_node_id": pa.array(self.classifier.node_ids[take].tolist(), pa.string(), mask=unassigned),
            "taxonomy_label": pa.array(self.classifier.labels[take].tolist(), pa.string(), mask=unassigned),
            "taxonomy_similarity": pa.array(self.similarity[at] if len(self.similarity) else np.zeros(len(rows)),
                                            pa.float32(), mask=~found),
        }

    def metadata(self) -> dict[str, Any]:
        assigned = int((self.index >= 0).sum())
        return {
            "taxonomy": self.classifier.name,
            "taxonomy_assigned_documents": assigned,
            "taxonomy_unassigned_documents": int(len(self.index) - assigned),
            "taxonomy_similarity_threshold": self.classifier.threshold,
        }
