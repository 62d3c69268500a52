"""Each stage of a cluster definition as a plain function over the storage layer.

No Dagster here: the factory wires these into assets, and the benchmark calls
them directly as the no-orchestration reference. Each function returns a
``StageResult`` whose metadata the Dagster layer shows in the UI.
"""

from cluster_assets.stages.assign import run_assignments
from cluster_assets.stages.embed import run_embeddings
from cluster_assets.stages.enrich import run_enrichment
from cluster_assets.stages.label import run_labels
from cluster_assets.stages.map import run_cluster_map
from cluster_assets.stages.reduce import run_reduced_coords
from cluster_assets.stages.result import StageResult
from cluster_assets.stages.sample import run_sample

__all__ = [
    "StageResult",
    "run_sample",
    "run_embeddings",
    "run_assignments",
    "run_reduced_coords",
    "run_labels",
    "run_enrichment",
    "run_cluster_map",
]
