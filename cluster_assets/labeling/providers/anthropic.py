"""Anthropic messages. Transport only: retries, timeouts and parsing are the base class's.

``base_url`` comes from the definition, else the SDK's own ``ANTHROPIC_BASE_URL``.
Images go as ``image`` blocks with a URL source. Anthropic has no embedding
endpoint, so dedup uses the local vectorizer.
"""

from __future__ import annotations

from cluster_assets.labeling.inputs import TEXT, Part
from cluster_assets.labeling.media import FRAMES, URL
from cluster_assets.labeling.prompts import Prompt, merged_parts
from cluster_assets.labeling.providers.base import Provider, Reply


def message_content(parts: list[Part]) -> list[dict]:
    content = []
    for part in merged_parts(parts):
        if part.kind == TEXT:
            content.append({"type": "text", "text": part.value})
        elif part.kind == "image_url" and part.value.startswith("data:"):  # a video's frames
            media_type, _, data = part.value[len("data:"):].partition(";base64,")
            content.append({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        elif part.kind == "image_url":
            content.append({"type": "image", "source": {"type": "url", "url": part.value}})
        else:  # refused earlier by the modality check; kept as a guard
            raise ValueError(f"messages cannot take {part.kind} parts")
    return content


class AnthropicProvider(Provider):
    name = "anthropic"
    aliases = ("anthropic_messages_v1",)
    # messages take images (no audio); a video goes as frames
    media = {"image_url": URL, "video_url": FRAMES}
    default_model = "claude-haiku-4-5"
    default_embedding_model = None
    key_variables = ("ANTHROPIC_API_KEY",)
    base_url_variable = "ANTHROPIC_BASE_URL"

    def _make_client(self):
        import anthropic

        return anthropic.Anthropic(api_key=self._api_key, base_url=self.base_url,
                                   timeout=self.timeout, max_retries=0)

    def _send(self, client, prompt: Prompt, schema: dict, structured: bool) -> Reply:
        kwargs = {}
        if structured:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        response = client.messages.create(
            model=self.model,
            max_tokens=self.max_output_tokens,
            system=prompt.system,
            messages=[{"role": "user", "content": message_content(list(prompt.parts))}],
            **kwargs,
        )
        text = "".join(block.text for block in response.content if getattr(block, "type", None) == "text")
        usage = response.usage
        return Reply(text, getattr(usage, "input_tokens", 0) or 0, getattr(usage, "output_tokens", 0) or 0)
