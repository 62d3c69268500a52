"""The provider base class: retry, backoff, timeout, fail-fast and answer parsing, for every provider.

A provider subclass only moves bytes: ``_send`` turns a ``Prompt`` into one call
of its SDK and returns the reply text and token counts; ``_embed`` (optional)
calls an embedding endpoint. Everything else lives here:

- every call has a timeout (the SDK's own retries are off: retries are counted here);
- 408/409/429/5xx, timeouts and connection errors are retried with exponential
  backoff and jitter, honouring ``retry-after`` / ``retry-after-ms`` headers;
- an answer that is not JSON or does not match the schema is asked again;
- 401/403/404 stop the whole provider (fail-fast): every cluster left falls back
  at once instead of repeating a call that cannot succeed;
- a 400 while a structured-output mode was requested switches that mode off and
  asks again in plain JSON (gateways and local servers often lack it);
- error messages and answers are scrubbed of the API key and of any credential in
  the endpoint URL (whole or any 8+ character piece: providers echo key suffixes),
  and of anything that looks like a key, before they leave this module; the
  endpoint is only ever shown redacted, and the HTTP client's own request log is
  scrubbed too (``cluster_assets.secrets``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster_assets.labeling.prompts import Prompt
from cluster_assets.labeling.shape import AnswerError, parse_answer, wire_schema
from cluster_assets.secrets import REDACTED, scrub  # noqa: F401 - re-exported
from cluster_assets.secrets import Scrubber, protect_logs, redact_url, url_secrets

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
FATAL_STATUS = {401, 403, 404}


class ProviderError(Exception):
    """One failed call, already scrubbed. ``retryable``: ask again; ``fatal``: stop the provider."""

    def __init__(self, message: str, *, retryable: bool = False, fatal: bool = False,
                 status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.fatal = fatal
        self.status = status
        self.retry_after = retry_after


@dataclass
class Reply:
    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Completion:
    """The outcome of asking about one cluster: the parsed answer or the (scrubbed) reason there is none."""

    answer: dict | None = None
    error: str | None = None
    calls: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Provider:
    """One registry entry: everything the rest of the code knows of a provider comes from these attributes."""

    name: str = "provider"
    aliases: tuple[str, ...] = ()  # other names a definition may use (the reference's)
    # how each media input key is sent (``media.URL``, ``FRAMES`` or ``DATA``); a key not listed is refused
    media: dict[str, str] = {}
    default_model: str = ""
    default_embedding_model: str | None = None
    key_variables: tuple[str, ...] = ()
    base_url_variable: str | None = None  # the SDK's own endpoint variable, used when base_url is unset

    @classmethod
    def modalities(cls) -> frozenset[str]:
        return frozenset({"text", *cls.media})

    def __init__(self, *, api_key: str, model: str | None = None, base_url: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, max_output_tokens: int = 1024,
                 embedding_model: str | None = None, backoff_base: float = 0.5, backoff_cap: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep):
        self._api_key = api_key
        self.model = model or self.default_model
        self.base_url = base_url
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_output_tokens = int(max_output_tokens)
        self.embedding_model = embedding_model or self.default_embedding_model
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self.structured = True  # ask for the provider's structured-output mode until it refuses
        self._stopped: str | None = None
        self._lock = threading.Lock()
        self._client_instance = None
        # The endpoint the SDK will call: its credentials are secrets like the key.
        self.endpoint = base_url or (os.environ.get(self.base_url_variable) if self.base_url_variable else None)
        self.scrubber = Scrubber([api_key, *url_secrets(self.endpoint)])

    def __repr__(self) -> str:  # never the key, nor the endpoint's credentials
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.scrub(redact_url(self.base_url))!r})"

    # --- what a subclass provides ---------------------------------------------------------------
    def _make_client(self):
        raise NotImplementedError

    def _send(self, client, prompt: Prompt, schema: dict, structured: bool) -> Reply:
        raise NotImplementedError

    def _embed(self, client, texts: list[str]) -> list[list[float]] | None:
        """Vectors from the provider's embedding endpoint, or None when it has none."""
        return None

    # --- shared machinery -----------------------------------------------------------------------
    @property
    def client(self):
        with self._lock:
            if self._client_instance is None:
                protect_logs(self.scrubber)  # the HTTP client logs every request's URL
                self._client_instance = self._make_client()
            return self._client_instance

    @property
    def stopped(self) -> str | None:
        """Why the provider stopped taking calls (fail-fast), or None."""
        return self._stopped

    def scrub(self, text: str) -> str:
        return self.scrubber(text)

    def classify(self, exc: BaseException) -> ProviderError:
        """An SDK exception -> a scrubbed ``ProviderError``; both SDKs share these shapes."""
        if isinstance(exc, ProviderError):
            return exc
        kind = type(exc).__name__
        status = getattr(exc, "status_code", None)
        if status is None and "Timeout" in kind:
            return ProviderError(f"no answer within {self.timeout:g}s (timeout)", retryable=True)
        if status is None and "Connection" in kind:
            where = redact_url(self.endpoint) or "the provider"
            return ProviderError(self.scrub(f"cannot connect to {where}: {str(exc)[:200]}"), retryable=True)
        if status is None:
            return ProviderError(f"{kind}: {self.scrub(str(exc))[:200]}")
        if status in (401, 403):
            # The provider's own text may quote the key (even partly): leave it out entirely.
            return ProviderError(f"authentication refused (HTTP {status}): check the API key", status=status, fatal=True)
        detail = self.scrub(_error_detail(exc))[:300]
        if status in FATAL_STATUS:
            return ProviderError(f"HTTP {status} (model {self.model!r} or endpoint not found): {detail}",
                                 status=status, fatal=True)
        return ProviderError(f"HTTP {status}: {detail}", status=status, retryable=status in RETRYABLE_STATUS
                             or status >= 500, retry_after=_retry_after(exc))

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_cap)
        return min(self.backoff_cap, self.backoff_base * (2 ** attempt)) * random.uniform(0.5, 1.0)

    def stop(self, reason: str) -> None:
        with self._lock:
            if self._stopped is None:
                self._stopped = reason

    def complete(self, prompt: Prompt, schema: dict,
                 parse: Callable[[str | None, dict], dict] = parse_answer) -> Completion:
        """Ask until a valid answer (``parse`` raises ``AnswerError`` for an invalid one), a fatal error or the
        retry budget runs out; never raises."""
        done = Completion()
        sent_schema = wire_schema(schema)
        attempt = 0
        downgraded = False
        while True:
            if self._stopped:
                done.error = f"provider stopped: {self._stopped}"
                return done
            structured = self.structured
            done.calls += 1
            try:
                reply = self._send(self.client, prompt, sent_schema, structured)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a scrubbed ProviderError
                error = self.classify(exc)
                if error.status == 400 and structured and not downgraded:
                    self.structured = False  # the endpoint refuses structured output: plain JSON from now on
                    downgraded = True
                    done.retries += 1
                    continue
                if error.fatal:
                    self.stop(error.message)
                    done.error = error.message
                    return done
                if not error.retryable or attempt >= self.max_retries:
                    if "cannot connect" in error.message:
                        self.stop(error.message)  # an unreachable server will not answer the next cluster either
                    done.error = error.message
                    return done
                self._sleep(self.backoff(attempt, error.retry_after))
                attempt += 1
                done.retries += 1
                continue
            done.input_tokens += reply.input_tokens
            done.output_tokens += reply.output_tokens
            try:
                # A model may echo what it was given (a key in a document, a gateway's banner).
                done.answer = self.scrubber.value(parse(reply.text, schema))
                return done
            except AnswerError as exc:
                if attempt >= self.max_retries:
                    done.error = f"invalid answer after {attempt + 1} attempts: {self.scrub(str(exc))}"
                    return done
                attempt += 1
                done.retries += 1

    def embed(self, texts: list[str]) -> list[list[float]] | None:
        """Embeddings from the provider (one call, retried like the others), or None when it has none."""
        attempt = 0
        while True:
            try:
                return self._embed(self.client, texts)
            except Exception as exc:  # noqa: BLE001
                error = self.classify(exc)
                if not error.retryable or attempt >= self.max_retries:
                    raise error from None
                self._sleep(self.backoff(attempt, error.retry_after))
                attempt += 1


def _error_detail(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", None) or exc)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None
