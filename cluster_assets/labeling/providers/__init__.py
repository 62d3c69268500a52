"""One module per provider behind a registry; the SDKs are imported only when a client is made."""

from __future__ import annotations

from cluster_assets.labeling.providers.anthropic import AnthropicProvider
from cluster_assets.labeling.providers.base import Completion, Provider, ProviderError, Reply, scrub
from cluster_assets.labeling.providers.google import GoogleProvider
from cluster_assets.labeling.providers.openai import OpenAIProvider

PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "google": GoogleProvider,
}

KEY_VARIABLES = {name: cls.key_variables for name, cls in PROVIDERS.items()}
MODALITIES = {name: cls.modalities for name, cls in PROVIDERS.items()}

__all__ = ["PROVIDERS", "KEY_VARIABLES", "MODALITIES", "Completion", "Provider", "ProviderError", "Reply", "scrub",
           "OpenAIProvider", "AnthropicProvider", "GoogleProvider"]
