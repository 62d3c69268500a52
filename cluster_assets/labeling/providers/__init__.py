"""One module per provider behind a registry; the SDKs are imported only when a client is made."""

from __future__ import annotations

from cluster_assets.labeling.providers.anthropic import AnthropicProvider
from cluster_assets.labeling.providers.base import Completion, Provider, ProviderError, Reply, scrub
from cluster_assets.labeling.providers.google import GoogleProvider
from cluster_assets.labeling.providers.openai import OpenAIProvider

# The one list of providers: a new one is a module with its Provider subclass and a line here.
PROVIDERS: dict[str, type[Provider]] = {cls.name: cls for cls in (OpenAIProvider, AnthropicProvider, GoogleProvider)}

ALIASES = {alias: cls.name for cls in PROVIDERS.values() for alias in cls.aliases}
KEY_VARIABLES = {name: cls.key_variables for name, cls in PROVIDERS.items()}
MODALITIES = {name: cls.modalities() for name, cls in PROVIDERS.items()}


def provider_name(name: str) -> str:
    """A registry name or alias -> the registry name; ``ValueError`` listing the valid ones."""
    if name in PROVIDERS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise ValueError(f"unknown provider {name!r}; valid: {', '.join([*PROVIDERS, *ALIASES])}")

__all__ = ["PROVIDERS", "ALIASES", "KEY_VARIABLES", "MODALITIES", "provider_name", "Completion", "Provider", "ProviderError", "Reply", "scrub",
           "OpenAIProvider", "AnthropicProvider", "GoogleProvider"]
