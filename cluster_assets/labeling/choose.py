from __future__ import annotations

import os
from collections.abc import Mapping

from cluster_assets.labeling.base import DataLabeler, Labeler
from cluster_assets.labeling.cache import LabelCache
from cluster_assets.labeling.inputs import Presigner
from cluster_assets.labeling.providers import KEY_VARIABLES, PROVIDERS
from cluster_assets.labeling.shape import extra_types
from cluster_assets.spec import ClusterDefinition


def key_from_environment(provider: str, environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    return next((environ[name] for name in KEY_VARIABLES.get(provider, ()) if environ.get(name)), None)


def choose_labeler(spec: ClusterDefinition, keys: Mapping[str, str | None] | None = None, *,
                   storage=None, presign: Presigner | None = None,
                   environ: Mapping[str, str] | None = None) -> Labeler:
    """The LLM labeler the definition asks for, or data labels with the reason why not.

    ``keys`` maps provider names to API keys (the Dagster resource's values);
    without it the keys are read from the environment. ``storage`` holds the
    label cache; ``presign`` signs ``s3://`` media URLs.
    """
    config = spec.llm_labeling
    if config is None or not config.enabled:
        return DataLabeler()
    shape_types = extra_types(config.response_shape)
    entry = PROVIDERS[config.provider]
    key = keys.get(config.provider) if keys is not None else key_from_environment(config.provider, environ)
    if not key:
        names = KEY_VARIABLES[config.provider]
        return DataLabeler(f"no API key for {config.provider}: set {' or '.join(names)}", shape_types)
    from cluster_assets.labeling.llm import LLMLabeler

    provider = entry(
        api_key=key, model=config.model_name, base_url=config.base_url, timeout=config.timeout_seconds,
        max_retries=config.max_retries, max_output_tokens=config.max_output_tokens,
        embedding_model=config.embedding_model,
    )
    cache = LabelCache(storage, config.cache_ttl_seconds) if storage is not None and config.cache_ttl_seconds > 0 else None
    return LLMLabeler(config, provider, cache, presign)
