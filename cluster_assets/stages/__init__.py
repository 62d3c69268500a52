"""The stages of a cluster definition, declared once.

Each ``Stage`` says what it reads, whether it works per source file (a Dagster partition)
or once per fit, and which plain function does the work (no Dagster here). The Dagster
assets and their dependencies (factory.py), the bench's plain runner and the CLI's views
are all derived from ``STAGES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cluster_assets.stages.assign import run_assignments
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.stages.embed import run_embeddings
from cluster_assets.stages.enrich import run_enrichment
from cluster_assets.stages.label import run_labels
from cluster_assets.stages.map import run_cluster_map
from cluster_assets.stages.model import run_model
from cluster_assets.stages.reduce import run_reduced_coords
from cluster_assets.stages.result import StageResult
from cluster_assets.stages.sample import run_sample


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], StageResult]
    reads: tuple[str, ...]  # upstream stages whose outputs it reads
    per_file: bool  # one partition per source file, or once per fit
    reads_sources: bool  # reads the source collections' files directly
    description: str
    resources: frozenset[str] = frozenset()


ENGINE = frozenset({"engine"})  # per-file work: the deployment's engine (in-process or Ray)

STAGES: tuple[Stage, ...] = (
    Stage("sample", run_sample, (), False, True,
          "Lists the source files, checks document ids, and draws the seeded sample the model is fitted on."),
    Stage("embeddings", run_embeddings, ("sample",), False, True,
          "The sample's validated float32 matrix (only the sample is materialized; per-file stages read "
          "features from the source files)."),
    Stage("model", run_model, ("embeddings",), False, False,
          "Fits {algorithm} and the map reducer on the sample: the fit every per-file stage uses."),
    Stage("assignments", run_assignments, ("model",), True, True,
          "Assigns every document of each source file to a cluster of the fit (-1 = noise).", ENGINE),
    Stage("reduced_coords", run_reduced_coords, ("model", "assignments"), True, True,
          "Map coordinates of every document of each file; writes the run's members.parquet.", ENGINE),
    Stage("labels", run_labels, ("embeddings", "model", "assignments"), False, True,
          "Centroids over every file and a name for every cluster (label, summary, keywords); writes the "
          "run's centroids.parquet and makes the fit current.", frozenset({"llm"})),
    Stage("enriched_collection", run_enrichment, ("assignments", "labels"), True, True,
          "Writes each source file with cluster_id and label fields as a file of {targets}.", ENGINE),
    Stage("cluster_map", run_cluster_map, ("reduced_coords", "labels"), False, False,
          "The labelled map of the clusters: a PNG shown here, map.png and the interactive map.html "
          "beside the run's artifacts."),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}
PER_FILE = tuple(s.name for s in STAGES if s.per_file)

def plain_context(storage, spec, run_id: str) -> StageContext:
    """A context for running every stage in one process without Dagster: one id for sample, fit and run."""
    from cluster_assets.stages.sample import source_files

    files = list(source_files(storage, spec))
    return StageContext(storage, spec, run_id, sample_id=run_id, fit_id=run_id, partitions=files,
                        all_partitions=files)


def run_plain(storage, spec, run_id: str = "plain", until: str | None = None, ctx: StageContext | None = None,
              on_result: Callable[[Stage, StageResult], None] | None = None) -> dict[str, StageResult]:
    """Every stage in order (up to ``until``) as plain function calls: the bench's reference, the tests' shortcut."""
    ctx = ctx or plain_context(storage, spec, run_id)
    results: dict[str, StageResult] = {}
    for stage in STAGES:
        result = stage.run(ctx)
        if result.commit:
            result.commit()
        results[stage.name] = result
        if on_result:
            on_result(stage, result)
        if stage.name == until:
            break
    return results


__all__ = ["plain_context", "run_plain", "BY_NAME", "LineageError", "PER_FILE", "STAGES", "STAGE_NAMES", "Stage", "StageContext", "StageResult"]
