"""Where each stage keeps its outputs: addressed by the sample or fit they belong to, never one shared file.

    assets/<cluster>/samples/<sample_id>/{sample,embeddings}.parquet, features.json
    assets/<cluster>/fits/<fit_id>/model.pkl, fit.json, clusters.parquet, labels.parquet, hierarchy.parquet
    assets/<cluster>/fits/<fit_id>/files/<collection_id>/<file name>/{assignments,stats,coords}.parquet
    assets/<cluster>/current.json      the latest complete fit (written when its labels are)
    artifacts/<cluster>/<run_id>/...   what a run shows a user (centroids, members, hierarchy, maps)

A ``sample_id`` is the run id of the run that drew the sample; a ``fit_id`` the run id of the
run that fitted the model (the ``cluster_assets/fit_id`` metadata of every later stage).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from cluster_assets.spec import ClusterDefinition

SAMPLE = "sample.parquet"
EMBEDDINGS = "embeddings.parquet"
FEATURES = "features.json"
MODEL = "model.pkl"
FIT = "fit.json"
ASSIGNMENTS = "assignments.parquet"
STATS = "stats.parquet"
COORDS = "coords.parquet"
CLUSTERS = "clusters.parquet"
LABELS = "labels.parquet"
HIERARCHY = "hierarchy.parquet"  # hierarchical: true: the tree of the clusters (node_id, parent_id, level, ...)
CURRENT = "current.json"

CENTROIDS_ARTIFACT = "centroids.parquet"
MEMBERS_ARTIFACT = "members.parquet"
HIERARCHY_ARTIFACT = "hierarchy.parquet"  # every node of the tree, parents labelled
MAP_PNG_ARTIFACT = "map.png"
MAP_HTML_ARTIFACT = "map.html"

FIT_ID_KEY = "cluster_assets/fit_id"
SAMPLE_ID_KEY = "cluster_assets/sample_id"
SOURCE_FILES_KEY = "cluster_assets/source_files"


def cluster_parts(spec: ClusterDefinition, *names: str) -> tuple[str, ...]:
    return ("assets", spec.cluster_name, *names)


def sample_parts(spec: ClusterDefinition, sample_id: str, name: str) -> tuple[str, ...]:
    return cluster_parts(spec, "samples", sample_id, name)


def fit_parts(spec: ClusterDefinition, fit_id: str, name: str) -> tuple[str, ...]:
    return cluster_parts(spec, "fits", fit_id, name)


def file_parts(spec: ClusterDefinition, fit_id: str, partition: str, name: str) -> tuple[str, ...]:
    """A per-file output of a fit; ``partition`` is ``<collection_id>/<file name>``."""
    collection_id, file_name = split_partition(partition)
    return cluster_parts(spec, "fits", fit_id, "files", collection_id, file_name, name)


def artifacts_parts(spec: ClusterDefinition, *names: str) -> tuple[str, ...]:
    return ("artifacts", spec.cluster_name, *names)


def artifact_parts(spec: ClusterDefinition, run_id: str, name: str) -> tuple[str, ...]:
    return artifacts_parts(spec, run_id, name)


def partition_key(collection_id: str, file_name: str) -> str:
    return f"{collection_id}/{file_name}"


def split_partition(partition: str) -> tuple[str, str]:
    collection_id, _, file_name = partition.partition("/")
    if not collection_id or not file_name or "/" in file_name:
        raise ValueError(f"partition {partition!r} is not <collection_id>/<file name>")
    return collection_id, file_name


def seed(spec: ClusterDefinition) -> int:
    value = spec.algorithm_config.get("random_state", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class CurrentFit:
    """The pointer to a definition's latest complete fit (its labels written)."""

    fit_id: str
    sample_id: str
    partitions: list[str] = field(default_factory=list)  # the files its full run assigned
    previous_fit_id: str | None = None
    # the fit's own readout over those files, which the event sensor's drift check compares new files with
    cohesion: float | None = None
    noise_share: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()


def read_fit_record(storage, spec: ClusterDefinition, fit_id: str) -> dict:
    """A fit's ``fit.json`` (its sample id, versions, ...); empty when the fit has none."""
    try:
        return json.loads(storage.read_bytes(*fit_parts(spec, fit_id, FIT)))
    except FileNotFoundError:
        return {}


def read_current(storage, spec: ClusterDefinition) -> CurrentFit | None:
    parts = cluster_parts(spec, CURRENT)
    if not storage.exists(*parts):
        return None
    return CurrentFit(**json.loads(storage.read_bytes(*parts)))


def write_current(storage, spec: ClusterDefinition, current: CurrentFit) -> None:
    storage.write_bytes(current.to_json(), *cluster_parts(spec, CURRENT))


def current_fit_id(storage, spec: ClusterDefinition) -> str:
    current = read_current(storage, spec)
    if current is None:
        raise FileNotFoundError(f"{spec.cluster_name!r} has no complete fit yet: run `cluster-assets run "
                                f"{spec.cluster_name}` first")
    return current.fit_id
