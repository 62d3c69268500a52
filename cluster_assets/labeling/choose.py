from __future__ import annotations

import os

from cluster_assets.labeling.base import DataLabeler, Labeler
from cluster_assets.spec import ClusterDefinition

KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


def choose_labeler(spec: ClusterDefinition, environ: dict[str, str] | None = None) -> Labeler:
    """The LLM labeler the definition asks for, or data labels with the reason why not."""
    environ = os.environ if environ is None else environ
    config = spec.llm_labeling
    if config is None or not config.enabled:
        return DataLabeler()
    names = KEY_VARIABLES[config.provider]
    if not any(environ.get(name) for name in names):
        return DataLabeler(f"no API key for {config.provider}: set {' or '.join(names)}")
    return DataLabeler(f"LLM labeling with {config.provider} is not available in this version")
