"""The ``llm_labeling`` block, with the reference's field names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from cluster_assets.spec.base import MEDIA_INPUT_KEYS, _Strict


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
    provider: str = "openai"  # a name or alias of the provider registry (cluster_assets.labeling.providers)
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
    # Extension: what dedup does with near-duplicate labels: a suffix from the cluster's own keywords,
    # re-ask the model with the neighbours' labels and keywords (contrast; then a suffix for what still
    # collides), or merge them on purpose (the labels stay shared; ``merged_with`` lists the clusters).
    dedup_strategy: Literal["suffix", "contrast", "merge"] = "suffix"
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
        from cluster_assets.labeling.providers import provider_name

        return provider_name(value) if isinstance(value, str) else value
