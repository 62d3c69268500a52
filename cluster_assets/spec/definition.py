"""One cluster definition: the reference API's body, validated across its fields."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from cluster_assets import algorithms
from cluster_assets.spec.automation import Checks, Trigger, Webhook
from cluster_assets.spec.base import RESERVED_KEY_PREFIXES, STANDARD_ENRICHMENT_FIELDS, _Strict, check_safe_id
from cluster_assets.spec.labeling import LLMLabeling


class DimensionReduction(_Strict):
    method: Literal["umap", "pca"] = "umap"
    components: Literal[2, 3] = Field(2, validation_alias=AliasChoices("components", "n_components"))
    config: dict[str, Any] = Field(default_factory=dict)
    # UMAP is fitted on at most this many points and applied to the rest: a 2-D map
    # needs far fewer points than the collection has (5k fit: ~2 s; placing 1M points: ~15 s).
    fit_size: int = Field(5_000, ge=10)


class ClusterSpace(_Strict):
    """Extension: the space the algorithm clusters in, fitted on the sample and applied to every document.

    ``algorithm_config`` holds only the estimator's own parameters; this says where it runs.
    Default: the algorithm's own (``algorithms.REGISTRY[...].cluster_space``: UMAP for the
    density algorithms and mean_shift, the raw vectors for the others).
    """

    method: Literal["umap", "pca", "none"] = "umap"
    components: int = Field(5, ge=1, le=100, validation_alias=AliasChoices("components", "n_components"))
    config: dict[str, Any] = Field(default_factory=dict)


class Outliers(_Strict):
    """Extension: give noise documents (-1) the nearest cluster after all, for new files too.

    The distance is measured in the space the algorithm clustered in, to the cluster's
    centroid there; ``max_distance`` caps it (no cap when unset).
    """

    reassign: bool = False
    max_distance: float | None = Field(None, gt=0)


class Enrichment(_Strict):
    target_collection_id: str | None = None
    fields: list[str] = Field(default_factory=lambda: ["label", "summary", "keywords"])
    # the source columns copied into the target; default: every column but the feature vectors
    columns: list[str] | None = None

    @field_validator("target_collection_id")
    @classmethod
    def _safe_target(cls, value: str | None) -> str | None:
        return None if value is None else check_safe_id(value, "collection id")

    @model_validator(mode="before")
    @classmethod
    def _run_is_per_request(cls, data: Any) -> Any:
        # the reference's enrich request body pasted into a definition: say where its run_id goes
        if isinstance(data, dict) and "run_id" in data:
            raise ValueError("run_id: a run is chosen per enrich request, not in the definition: "
                             "`cluster-assets enrich CLUSTER --run-id R` (or --body with the request)")
        return data


class HierarchyOptions(_Strict):
    """How ``hierarchical: true`` groups the clusters into a tree (see ``cluster_assets.hierarchy``)."""

    # levels counts the clusters' own level: 2 = one level of parents above the clusters
    levels: int | None = Field(None, ge=2, le=8)
    # or the typical number of children per parent (the top then holds at most this many nodes)
    branching: int | None = Field(None, ge=2, le=100)
    top_nodes: int | None = Field(None, ge=1, le=100)
    # merging centroids weighted by cluster size (hdbscan uses its own condensed tree instead)
    linkage: Literal["ward", "average", "complete", "single"] = "ward"

    @model_validator(mode="after")
    def _levels_or_branching(self) -> "HierarchyOptions":
        if self.levels is not None and self.branching is not None:
            raise ValueError("give either levels or branching, not both")
        return self


class TaxonomyClassification(_Strict):
    """Classify the documents into a promoted taxonomy's nodes (nearest centroid above a similarity)."""

    name: str
    similarity_threshold: float = Field(0.5, ge=-1.0, le=1.0)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_safe_id(value, "taxonomy name")


class Retention(_Strict):
    """What ``cluster-assets prune`` keeps of a definition's fits, samples and run artifacts: the newest
    ``keep_fits`` fits, and everything written in the last ``keep_days`` days (besides what the current
    fit, a promoted taxonomy or a run in progress needs, which is never pruned)."""

    keep_fits: int = Field(3, ge=1)
    keep_days: float = Field(30, ge=0)


class ClusterDefinition(_Strict):
    cluster_name: str
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_collection_ids: list[str] = Field(min_length=1)
    feature_addresses: list[str] = Field(min_length=1)
    algorithm: str = "kmeans"
    algorithm_config: dict[str, Any] = Field(default_factory=dict)
    dimension_reduction: DimensionReduction | None = None
    llm_labeling: LLMLabeling | None = None
    hierarchical: bool = False
    hierarchy: HierarchyOptions = Field(default_factory=HierarchyOptions)
    sample_size: int | None = Field(None, ge=1)
    cluster_space: ClusterSpace | None = None
    outliers: Outliers = Field(default_factory=Outliers)
    # Extension: L2-normalise each feature before clustering (always done per
    # feature when several addresses are combined, so none dominates).
    normalize: bool = False
    enrichment: Enrichment = Field(default_factory=Enrichment)
    triggers: list[Trigger] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    checks: Checks = Field(default_factory=Checks)
    # a taxonomy name (or {name, similarity_threshold}): adds taxonomy_node_id/taxonomy_label to the enrichment
    taxonomy: TaxonomyClassification | None = None
    retention: Retention = Field(default_factory=Retention)

    @field_validator("cluster_name")
    @classmethod
    def _safe_cluster_name(cls, value: str) -> str:
        return check_safe_id(value, "cluster_name")

    @field_validator("cluster_name")
    @classmethod
    def _not_a_reserved_prefix(cls, value: str) -> str:
        # <cluster_name>/<stage> would share the prefix of the source collections' or taxonomies' keys
        if value in RESERVED_KEY_PREFIXES:
            raise ValueError(f"{value!r} is reserved: its asset keys would clash with {value}/<name> "
                             f"(reserved: {', '.join(RESERVED_KEY_PREFIXES)})")
        return value

    @field_validator("taxonomy", mode="before")
    @classmethod
    def _taxonomy_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("source_collection_ids")
    @classmethod
    def _safe_collections(cls, value: list[str]) -> list[str]:
        for cid in value:
            check_safe_id(cid, "collection id")
        if len(set(value)) != len(value):
            raise ValueError("a collection is listed twice")
        return value

    @field_validator("feature_addresses")
    @classmethod
    def _parseable_addresses(cls, value: list[str]) -> list[str]:
        from cluster_assets.features import parse_address

        for address in value:
            parse_address(address)
        return value

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in algorithms.ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; valid: {', '.join(algorithms.ALGORITHMS)}")
        return value

    @model_validator(mode="after")
    def _cross_field_checks(self) -> "ClusterDefinition":
        try:
            algorithms.check_config(self.algorithm, self.algorithm_config, self.hierarchical)
        except algorithms.AlgorithmConfigError as exc:
            raise ValueError(f"{exc.field}: {exc}") from None
        extra = set((self.llm_labeling.response_shape or {}) if self.llm_labeling else {})
        for name in self.enrichment.fields:
            if name not in STANDARD_ENRICHMENT_FIELDS and name not in extra:
                raise ValueError(
                    f"enrichment.fields: unknown field {name!r}; valid: "
                    f"{', '.join(STANDARD_ENRICHMENT_FIELDS + tuple(sorted(extra)))}"
                )
        if self.enrichment.target_collection_id in self.source_collection_ids:
            raise ValueError("enrichment.target_collection_id: must differ from the source collections "
                             "(sources are never modified)")
        names = [t.name for t in self.triggers if t.name]
        if len(names) != len(set(names)):
            raise ValueError("triggers: two triggers share a name")
        if self.llm_labeling and self.llm_labeling.response_shape is not None:
            if not self.llm_labeling.response_shape:
                raise ValueError("llm_labeling.response_shape: give at least one field")
        return self

    @model_validator(mode="after")
    def _sample_holds_the_clusters(self) -> "ClusterDefinition":
        wanted = algorithms.requested_clusters(self.algorithm, self.algorithm_config, self.hierarchical)
        if self.sample_size is not None and wanted is not None and self.sample_size < wanted:
            given = sorted({"num_clusters", algorithms.count_param(self.algorithm, self.hierarchical)}
                           & set(self.algorithm_config))
            asked = f"algorithm_config.{given[0]}" if given else f"{self.algorithm}'s default"
            raise ValueError(f"sample_size: {self.sample_size} is smaller than the {wanted} clusters asked for by "
                             f"{asked}; the model is fitted on the sample: raise sample_size or lower num_clusters")
        return self

    # --- derived names used by the Dagster layer -------------------------------------------
    @property
    def group_name(self) -> str:
        """Dagster group names allow only [A-Za-z0-9_]; the reference allows '-' in names."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.cluster_name)

    def target_collection_ids(self) -> dict[str, str]:
        """Source collection id -> enriched collection id (default ``<source>_<cluster_name>_enriched``, so two
        definitions over one source never share a default target)."""
        target = self.enrichment.target_collection_id
        return {cid: target or f"{cid}_{self.cluster_name}_enriched" for cid in self.source_collection_ids}

    def multiple_sources_per_target(self, collection_id: str) -> bool:
        targets = self.target_collection_ids()
        return sum(1 for t in targets.values() if t == targets[collection_id]) > 1

    def cluster_space_or_default(self) -> ClusterSpace:
        """The space the algorithm clusters in: the definition's, else the algorithm's default."""
        if self.cluster_space is not None:
            return self.cluster_space
        return ClusterSpace(method=algorithms.REGISTRY[self.algorithm].cluster_space)

    def fit_size(self) -> int:
        return self.sample_size or algorithms.REGISTRY[self.algorithm].default_fit_size
