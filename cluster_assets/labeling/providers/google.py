"""Google Gemini through its OpenAI-compatible endpoint, with the ``openai`` package (no third SDK).

The endpoint is Google's unless the definition sets ``base_url``; ``OPENAI_BASE_URL``
is deliberately not honoured here, so a Gemini key is never sent to an OpenAI gateway.
"""

from __future__ import annotations

from cluster_assets.labeling.providers.openai import OpenAIProvider

GOOGLE_OPENAI_ENDPOINT = "https://generativelanguage.googleapis.com/v1beta/openai/"


class GoogleProvider(OpenAIProvider):
    name = "google"
    aliases = ("gemini",)
    default_model = "gemini-2.5-flash"
    default_embedding_model = "gemini-embedding-001"
    key_variables = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    base_url_variable = None
    max_tokens_parameter = "max_tokens"

    def _client_base_url(self) -> str:
        return self.base_url or GOOGLE_OPENAI_ENDPOINT
