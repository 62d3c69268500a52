"""Secrets never leave the process in the clear: one URL redactor and one scrubber for everything else.

- ``redact_url``: a URL with its credentials replaced (user info, and the values of
  query parameters that carry credentials, such as a presigned URL's
  ``X-Amz-Signature``); a URL without any comes back unchanged, so it can stay in a
  cache key. ``redact_endpoint`` keeps only scheme and host (webhook URLs carry
  tokens in their path).
- ``Scrubber``: text (or a parsed answer) with every run of 8+ characters taken from
  a configured secret replaced, whole or in part (a provider echoing a key's suffix
  is caught), plus anything shaped like an API key or a URL credential.
- ``protect_logs``: the HTTP clients the SDKs use log each request's URL, and botocore
  logs the signature of each presigned URL; a filter on their loggers scrubs those records.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

REDACTED = "[redacted]"
WINDOW = 8  # a fragment of a secret this long or longer is scrubbed
MIN_WHOLE = 4  # a secret shorter than WINDOW is scrubbed only whole, and only from this length
CREDENTIAL_PARAMETERS = frozenset(name.lower() for name in (
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId", "Signature",
    "X-Goog-Signature", "X-Goog-Credential", "sig", "token", "access_token", "api_key", "api-key", "apikey",
    "key", "password", "secret", "client_secret", "auth",
))
_KEY_LIKE = re.compile(r"(sk-ant-[\w\-*.]+|sk-[\w\-*.]{6,}|AIza[\w\-]{12,}|(?i:bearer)\s+[\w\-.~+/=*]+)")
_URL_USERINFO = re.compile(r"(?<=://)[^\s/?#@\[\]]+@")
_URL_CREDENTIAL = re.compile(
    r"([?&](?:" + "|".join(re.escape(n) for n in sorted(CREDENTIAL_PARAMETERS, key=len, reverse=True))
    + r")=)[^&\s\"'<>#]+", re.IGNORECASE)
_SIGNATURE_LINE = re.compile(r"(Signature:\s*)[0-9a-fA-F]{40,}")  # botocore's debug log of a SigV4 signature


# --- URLs ----------------------------------------------------------------------------------------
def redact_url(url: str | None) -> str | None:
    """``url`` with user info and credential query values replaced by ``[redacted]``; unchanged if it has none."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return REDACTED
    secret_query = any(name.lower() in CREDENTIAL_PARAMETERS for name, _ in query)
    if "@" not in parts.netloc and not secret_query:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = f"{REDACTED}@{netloc}"
    if secret_query:
        # Rebuilt by hand: urlencode would escape the brackets of the marker.
        query_text = "&".join(f"{name}={REDACTED if name.lower() in CREDENTIAL_PARAMETERS else value}"
                              for name, value in query)
    else:
        query_text = parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query_text, parts.fragment))


def redact_endpoint(url: str) -> str:
    """``scheme://host[:port]/…``: for URLs whose path itself may be a secret (webhooks)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}/…"


def url_secrets(url: str | None) -> list[str]:
    """The credentials a URL carries: its password (its user name when it has none) and credential query values."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password or parts.username]
        found += [value for name, value in parse_qsl(parts.query) if name.lower() in CREDENTIAL_PARAMETERS]
    except ValueError:
        return []
    return [s for s in found if s]


# --- text and answers ----------------------------------------------------------------------------
class Scrubber:
    """Removes configured secrets, whole or any 8+ character piece of them, and key-shaped tokens.

    Every ``WINDOW``-character substring of every secret goes into a set; a text is
    scanned once, each position looked up, and each maximal run of positions covered by
    matching windows becomes one ``[redacted]``: linear in the text, whatever the
    number of secrets.
    """

    def __init__(self, secrets: Iterable[str | None] = ()):
        secrets = {s for s in secrets if s}
        self._windows = frozenset(s[i:i + WINDOW] for s in secrets if len(s) >= WINDOW
                                  for i in range(len(s) - WINDOW + 1))
        self._whole = sorted((s for s in secrets if MIN_WHOLE <= len(s) < WINDOW), key=len, reverse=True)

    def __repr__(self) -> str:  # never the secrets
        return f"Scrubber({len(self._windows)} windows, {len(self._whole)} short secrets)"

    def __bool__(self) -> bool:
        return bool(self._windows or self._whole)

    def merged(self, other: Scrubber) -> Scrubber:
        out = Scrubber()
        out._windows = self._windows | other._windows
        out._whole = sorted(set(self._whole) | set(other._whole), key=len, reverse=True)
        return out

    def __call__(self, text: str) -> str:
        if not isinstance(text, str) or not text:
            return text
        if self._windows and len(text) >= WINDOW:
            text = self._without_windows(text)
        for secret in self._whole:
            text = text.replace(secret, REDACTED)
        text = _URL_USERINFO.sub(REDACTED + "@", text)
        text = _URL_CREDENTIAL.sub(lambda m: m.group(1) + REDACTED, text)
        text = _SIGNATURE_LINE.sub(lambda m: m.group(1) + REDACTED, text)
        return _KEY_LIKE.sub(REDACTED, text)

    def _without_windows(self, text: str) -> str:
        windows = self._windows
        out: list[str] = []
        kept = 0  # text[:kept] is already in out
        run_end = -1  # end of the covered run in progress
        for i in range(len(text) - WINDOW + 1):
            if text[i:i + WINDOW] in windows:
                if i > run_end:  # a new run starts here
                    out.append(text[kept:i])
                    out.append(REDACTED)
                run_end = i + WINDOW
                kept = run_end
        if not out:
            return text
        out.append(text[kept:])
        return "".join(out)

    def value(self, value: Any) -> Any:
        """Every string inside ``value`` (dicts, lists) scrubbed; keys and other types as they are."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(v) for v in value)
        return value


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` without the given secrets (or any 8+ character piece of them) and key-shaped tokens."""
    return Scrubber(secrets)(text)


# --- third-party logs ----------------------------------------------------------------------------
TRANSPORT_LOGGERS = ("httpx", "httpx2", "openai._base_client", "anthropic._base_client")


class ScrubbingFilter(logging.Filter):
    """Rewrites each record's message through the scrubber of every secret registered so far."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self.scrubber = Scrubber()

    def add(self, scrubber: Scrubber) -> None:
        with self._lock:
            self.scrubber = self.scrubber.merged(scrubber)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return True
        clean = self.scrubber(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = ScrubbingFilter()


def protect_logs(scrubber: Scrubber, loggers: Iterable[str] = TRANSPORT_LOGGERS) -> None:
    """Scrub ``scrubber``'s secrets (and URL credentials) from what the given loggers record."""
    _FILTER.add(scrubber)
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
