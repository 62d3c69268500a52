"""A label cache under the storage root: ``<root>/cache/llm_labels/<key>.json``.

The key is a SHA-256 of everything that changes the answer: provider, model,
endpoint, the prompt (system text, instructions, documents in order) and the
schema. Media URLs enter the key as written in the documents (``s3://...``), not
as presigned, so that a fresh signature does not defeat the cache; credentials in
a URL (the endpoint's password, a signature in the query) never enter it. An entry
holds only the parsed answer and when it was written; it expires after the TTL.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

CACHE_PARTS = ("cache", "llm_labels")
VERSION = 1


def cache_key(**parts) -> str:
    body = json.dumps({"v": VERSION, **parts}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class LabelCache:
    def __init__(self, storage, ttl_seconds: int, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.ttl = ttl_seconds
        self.clock = clock

    def _parts(self, key: str) -> tuple[str, ...]:
        return (*CACHE_PARTS, f"{key}.json")

    def get(self, key: str) -> dict | None:
        if self.ttl <= 0:
            return None
        try:
            entry = json.loads(self.storage.read_bytes(*self._parts(key)))
        except (OSError, FileNotFoundError, ValueError):
            return None
        if not isinstance(entry, dict) or self.clock() - float(entry.get("created_at", 0)) > self.ttl:
            return None
        answer = entry.get("answer")
        return answer if isinstance(answer, dict) else None

    def put(self, key: str, answer: dict) -> None:
        if self.ttl <= 0:
            return
        entry = {"created_at": self.clock(), "answer": answer}
        self.storage.write_bytes(json.dumps(entry, ensure_ascii=False).encode("utf-8"), *self._parts(key))
