"""What a stage is given: the storage, the definition, and which sample, fit, run and files it works on.

The Dagster layer fills it from the run (lineage.py); the bench's plain runner fills it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages.engine import Engine, InProcessEngine
from cluster_assets.storage import Storage


class LineageError(ValueError):
    """Inputs that do not belong together (two fits, a missing upstream output): says what to materialize."""


@dataclass
class StageContext:
    storage: Storage
    spec: ClusterDefinition
    run_id: str
    sample_id: str | None = None  # the sample the fit is drawn from (embeddings, model)
    fit_id: str | None = None  # the fit every stage after the model works in
    partitions: list[str] = field(default_factory=list)  # <collection_id>/<file name> of the per-file stages
    all_partitions: list[str] = field(default_factory=list)  # every file of the definition now
    code_version: str = ""
    labeler: Any = None  # labels: the definition's labeler (LLM or data)
    previously_enriched: frozenset[str] = frozenset()  # enrichment targets this definition wrote before
    engine: Engine = field(default_factory=InProcessEngine)  # per-file stages: where each file's work runs

    def need_sample(self) -> str:
        if not self.sample_id:
            raise LineageError(f"no sample for {self.spec.cluster_name!r}: materialize "
                               f"{self.spec.cluster_name}/sample first")
        return self.sample_id

    def need_fit(self) -> str:
        if not self.fit_id:
            raise LineageError(f"no fitted model for {self.spec.cluster_name!r}: materialize "
                               f"{self.spec.cluster_name}/model first (`cluster-assets run {self.spec.cluster_name}`)")
        return self.fit_id
