"""OpenAI chat completions (and any OpenAI-compatible server: vLLM, Ollama, LM Studio, gateways).

Transport only: retries, timeouts and parsing are the base class's. ``base_url``
comes from the definition, else the SDK's own ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

from cluster_assets.labeling.inputs import TEXT, Part
from cluster_assets.labeling.media import AUDIO_DATA, DATA, FRAMES, URL, split_audio
from cluster_assets.labeling.prompts import Prompt, merged_parts
from cluster_assets.labeling.providers.base import Provider, Reply


def chat_content(parts: list[Part]) -> str | list[dict]:
    """Parts -> a message's content: a plain string when it is all text (what every server takes)."""
    parts = merged_parts(parts)
    if len(parts) == 1 and parts[0].kind == TEXT:
        return parts[0].value
    content = []
    for part in parts:
        if part.kind == TEXT:
            content.append({"type": "text", "text": part.value})
        elif part.kind == "image_url":
            content.append({"type": "image_url", "image_url": {"url": part.value}})
        elif part.kind == AUDIO_DATA:
            fmt, data = split_audio(part.value)
            content.append({"type": "input_audio", "input_audio": {"data": data, "format": fmt}})
        else:  # refused earlier by the modality check; kept as a guard
            raise ValueError(f"chat completions cannot take {part.kind} parts")
    return content


class OpenAIProvider(Provider):
    name = "openai"
    aliases = ("openai_chat_v1",)
    # chat completions take images by URL and audio inline; a video goes as frames
    media = {"image_url": URL, "video_url": FRAMES, "audio_url": DATA}
    default_model = "gpt-4o-mini"
    default_embedding_model = "text-embedding-3-small"
    key_variables = ("OPENAI_API_KEY",)
    base_url_variable = "OPENAI_BASE_URL"
    # Newer OpenAI models refuse max_tokens; compatible servers generally take max_completion_tokens too.
    max_tokens_parameter = "max_completion_tokens"

    def _client_base_url(self) -> str | None:
        return self.base_url  # None: the SDK reads OPENAI_BASE_URL, then its default

    def _make_client(self):
        import openai

        return openai.OpenAI(api_key=self._api_key, base_url=self._client_base_url(),
                             timeout=self.timeout, max_retries=0)

    def _send(self, client, prompt: Prompt, schema: dict, structured: bool) -> Reply:
        kwargs = {self.max_tokens_parameter: self.max_output_tokens}
        if structured:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "cluster_label", "schema": schema, "strict": True},
            }
        response = client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": chat_content(list(prompt.parts))},
            ],
            **kwargs,
        )
        usage = response.usage
        text = response.choices[0].message.content if response.choices else None
        return Reply(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)

    def _embed(self, client, texts: list[str]) -> list[list[float]] | None:
        response = client.embeddings.create(model=self.embedding_model, input=texts)
        return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
