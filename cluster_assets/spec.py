"""Cluster definitions: the reference API's JSON body (or the same in YAML), parsed and validated.

Field names are the reference's, so its JSON definitions load verbatim. Every
problem is reported as ``<file>: <field>: <message>``.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster_assets import algorithms

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MEDIA_INPUT_KEYS = ("image_url", "video_url", "audio_url")
STANDARD_ENRICHMENT_FIELDS = ("label", "summary", "keywords", "confidence", "cluster_path", "representative")


def check_safe_id(value: str, what: str) -> str:
    """Collection ids and cluster names become folder names: no path characters."""
    if not SAFE_ID.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and use only letters, digits, '_', '-', '.' "
            f"(no '/', no '..')"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DimensionReduction(_Strict):
    method: Literal["umap", "pca"] = "umap"
    components: Literal[2, 3] = Field(2, validation_alias=AliasChoices("components", "n_components"))
    config: dict[str, Any] = Field(default_factory=dict)
    # UMAP is fitted on at most this many points and applied to the rest: a 2-D map
    # needs far fewer points than the collection has (5k fit: ~2 s; placing 1M points: ~15 s).
    fit_size: int = Field(5_000, ge=10)


class InputMapping(_Strict):
    input_key: Literal["text", "image_url", "video_url", "audio_url"]
    source_type: Literal["payload", "blob", "literal"]
    path: str | None = None
    override: str | None = None

    @field_validator("input_key", mode="before")
    @classmethod
    def _named_text_inputs(cls, value: Any) -> Any:
        # The reference also names text inputs after their field ("title", "description"):
        # those are text. An unknown "*_url" is a typo of a media key and stays an error.
        if isinstance(value, str) and value not in MEDIA_INPUT_KEYS and not value.endswith("_url"):
            return "text"
        return value

    @model_validator(mode="after")
    def _needs_path_or_override(self) -> "InputMapping":
        if self.source_type == "literal" and self.override is None:
            raise ValueError("a literal mapping needs 'override'")
        if self.source_type != "literal" and not self.path:
            raise ValueError(f"a {self.source_type} mapping needs 'path'")
        return self


class LabelingInputs(_Strict):
    input_mappings: list[InputMapping] = Field(default_factory=list)


class LLMLabeling(_Strict):
    enabled: bool = True
    description: str | None = None
    provider: Literal["openai", "anthropic", "google"] = "openai"
    model_name: str | None = Field(None, validation_alias=AliasChoices("model_name", "model"))
    base_url: str | None = None
    labeling_inputs: LabelingInputs | None = None
    max_samples_per_cluster: int = Field(5, ge=1, le=100)
    sample_text_max_length: int = Field(1000, ge=1)
    include_summary: bool = True
    include_keywords: bool = True
    custom_prompt: str | None = None
    response_shape: dict[str, Any] | None = None
    use_embedding_dedup: bool = False
    embedding_similarity_threshold: float = Field(0.8, ge=0.0, le=1.0)
    cache_ttl_seconds: int = Field(604_800, ge=0)
    max_concurrency: int = Field(4, ge=1, le=64)
    timeout_seconds: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0, le=10)
    # Extensions: how long presigned s3:// media URLs stay valid, the answer's token budget,
    # and the embedding model used for dedup (the provider's default when unset).
    presign_expiry_seconds: int = Field(3600, ge=1, le=604_800)
    max_output_tokens: int = Field(1024, ge=16, le=65_536)
    embedding_model: str | None = None

    @field_validator("response_shape")
    @classmethod
    def _shape_has_types(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from cluster_assets.labeling.shape import RESERVED_FIELDS, ShapeError, field_schema

        for name, kind in (value or {}).items():
            if name in RESERVED_FIELDS:
                raise ValueError(f"{name}: reserved for the labels table; choose another field name")
            try:
                field_schema(kind, name)
            except ShapeError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _provider_takes_inputs(self) -> "LLMLabeling":
        from cluster_assets.labeling.providers import MODALITIES

        supported = MODALITIES[self.provider]
        for i, mapping in enumerate(self.labeling_inputs.input_mappings if self.labeling_inputs else []):
            if mapping.input_key not in supported:
                raise ValueError(
                    f"labeling_inputs.input_mappings.{i}.input_key: provider {self.provider!r} cannot take "
                    f"{mapping.input_key} inputs; it takes: {', '.join(sorted(supported))}")
        return self

    @field_validator("provider", mode="before")
    @classmethod
    def _reference_provider_names(cls, value: Any) -> Any:
        aliases = {"openai_chat_v1": "openai", "anthropic_messages_v1": "anthropic", "gemini": "google"}
        return aliases.get(value, value)


class Enrichment(_Strict):
    target_collection_id: str | None = None
    fields: list[str] = Field(default_factory=lambda: ["label", "summary", "keywords"])

    @field_validator("target_collection_id")
    @classmethod
    def _safe_target(cls, value: str | None) -> str | None:
        return None if value is None else check_safe_id(value, "collection id")


class _TriggerBase(_Strict):
    name: str | None = None
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_]+", value):
            raise ValueError(f"trigger name {value!r} may use only letters, digits and '_'")
        return value


class CronTrigger(_TriggerBase):
    type: Literal["cron"]
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(f"{value!r} is not a valid cron string (five fields: minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as 'Europe/Paris')") from None
        return value


class IntervalTrigger(_TriggerBase):
    type: Literal["interval"]
    seconds: float | None = Field(None, gt=0)
    minutes: float | None = Field(None, gt=0)
    hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_interval(self) -> "IntervalTrigger":
        if not (self.seconds or self.minutes or self.hours):
            raise ValueError("an interval trigger needs a positive 'seconds', 'minutes' or 'hours'")
        if self.total_seconds < 1:
            raise ValueError("an interval trigger runs at most once a second: the interval adds up to less than 1 s")
        return self

    @property
    def total_seconds(self) -> int:
        return int(round((self.seconds or 0) + 60 * (self.minutes or 0) + 3600 * (self.hours or 0)))


class EventTrigger(_TriggerBase):
    type: Literal["event"]
    min_new_documents: int = Field(1, ge=1)
    event: str | None = None  # the reference's event name, kept for display


Trigger = Annotated[Union[CronTrigger, IntervalTrigger, EventTrigger], Field(discriminator="type")]


class Webhook(_Strict):
    url: str
    events: list[Literal["success", "failure"]] = Field(default_factory=lambda: ["success", "failure"])
    secret_env: str | None = None  # name of the environment variable holding the HMAC secret
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_retries: int = Field(2, ge=0, le=5)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("secret_env is the NAME of an environment variable holding the secret, not the secret")
        return value


class Checks(_Strict):
    """Thresholds of the asset checks on ``<cluster>/assignments``; a failing check warns unless ``blocking``."""

    enabled: bool = True
    # drift: share of documents (present in both runs) that changed cluster, after matching cluster ids
    max_changed_share: float = Field(0.3, ge=0.0, le=1.0)
    max_noise_share: float = Field(0.5, ge=0.0, le=1.0)
    # giant cluster: one cluster holds more than this share of the documents
    max_cluster_share: float = Field(0.8, gt=0.0, le=1.0)
    # empty cluster: fewer documents than this (cluster ids are 0..k-1, so a missing id is an empty cluster)
    min_cluster_size: int = Field(1, ge=1)
    blocking: bool = False


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
    # Extension: L2-normalise each feature before clustering (always done per
    # feature when several addresses are combined, so none dominates).
    normalize: bool = False
    enrichment: Enrichment = Field(default_factory=Enrichment)
    triggers: list[Trigger] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    checks: Checks = Field(default_factory=Checks)
    # a taxonomy name (or {name, similarity_threshold}): adds taxonomy_node_id/taxonomy_label to the enrichment
    taxonomy: TaxonomyClassification | None = None

    @field_validator("cluster_name")
    @classmethod
    def _safe_cluster_name(cls, value: str) -> str:
        return check_safe_id(value, "cluster_name")

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
            algorithms.check_config(self.algorithm, self.algorithm_config)
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

    # --- derived names used by the Dagster layer -------------------------------------------
    @property
    def group_name(self) -> str:
        """Dagster group names allow only [A-Za-z0-9_]; the reference allows '-' in names."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.cluster_name)

    def target_collection_ids(self) -> dict[str, str]:
        """Source collection id -> enriched collection id."""
        target = self.enrichment.target_collection_id
        return {cid: target or f"{cid}_enriched" for cid in self.source_collection_ids}

    def fit_size(self) -> int:
        return self.sample_size or algorithms.REGISTRY[self.algorithm].default_fit_size


class DefinitionError(ValueError):
    """One problem in one definition file: ``<file>: <field>: <message>``."""

    def __init__(self, path: str | Path, field: str | None, message: str):
        self.path = str(path)
        self.field = field
        self.message = message
        super().__init__(f"{self.path}: {field}: {message}" if field else f"{self.path}: {message}")


@dataclass(frozen=True)
class LoadedDefinition:
    path: Path
    spec: ClusterDefinition


def _field_of(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ()) if not str(p).startswith(("function-", "tagged-union"))]
    # Drop the discriminated-union tag pydantic inserts ("triggers.0.cron.cron" -> "triggers.0.cron").
    cleaned: list[str] = []
    for i, part in enumerate(loc):
        if i > 1 and part in ("cron", "interval", "event") and loc[i - 1].isdigit() and loc[0] == "triggers":
            continue
        cleaned.append(part)
    return ".".join(cleaned)


def _message_of(error: dict[str, Any]) -> str:
    message = error.get("msg", "invalid")
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if error.get("type") == "extra_forbidden":
        message = "unknown field"
    return message


def parse_definition(data: Any, path: str | Path = "<definition>") -> ClusterDefinition:
    """Validate one definition body; raise ``DefinitionError`` naming the file and the first bad field."""
    errors = definition_problems(data, path)
    if errors:
        raise errors[0]
    return ClusterDefinition.model_validate(data)


def definition_problems(data: Any, path: str | Path) -> list[DefinitionError]:
    if not isinstance(data, dict):
        return [DefinitionError(path, None, f"a definition is a mapping of fields, got {type(data).__name__}")]
    try:
        ClusterDefinition.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = _field_of(error)
            message = _message_of(error)
            if not field and re.match(r"^[a-z_][\w.]*: ", message):
                # model-level checks name their field as "<field>: <message>"
                field, message = message.split(": ", 1)
            problems.append(DefinitionError(path, field or None, message))
        return problems
    return []


def read_definition_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DefinitionError(path, None, f"cannot parse {path.suffix[1:].upper()}: {exc}") from None


def load_definition_file(path: Path) -> ClusterDefinition:
    return parse_definition(read_definition_file(path), path)


def definition_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.suffix in DEFINITION_SUFFIXES and not p.name.startswith("."))


def load_definitions(folder: Path) -> tuple[list[LoadedDefinition], list[DefinitionError]]:
    """Every valid definition in ``folder`` and one error per problem in the others.

    One broken file never stops the others from loading; a second file with the
    same ``cluster_name`` is refused, naming both files.
    """
    loaded: list[LoadedDefinition] = []
    problems: list[DefinitionError] = []
    if not folder.exists():
        return loaded, [DefinitionError(folder, None, "definitions folder does not exist")]
    seen: dict[str, Path] = {}
    for path in definition_files(folder):
        try:
            data = read_definition_file(path)
        except (DefinitionError, OSError, UnicodeDecodeError) as exc:
            problems.append(exc if isinstance(exc, DefinitionError) else DefinitionError(path, None, str(exc)))
            continue
        errors = definition_problems(data, path)
        if errors:
            problems.extend(errors)
            continue
        spec = ClusterDefinition.model_validate(data)
        if spec.cluster_name in seen or spec.group_name in {s.group_name for s in (d.spec for d in loaded)}:
            other = seen.get(spec.cluster_name) or next(d.path for d in loaded if d.spec.group_name == spec.group_name)
            problems.append(DefinitionError(path, "cluster_name", f"{spec.cluster_name!r} is already defined in {other}"))
            continue
        seen[spec.cluster_name] = path
        loaded.append(LoadedDefinition(path, spec))
    return loaded, problems
