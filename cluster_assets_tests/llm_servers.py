"""Fake LLM providers on 127.0.0.1 that speak the real wire formats, for the real SDK clients.

``FakeLLMServer("openai")`` answers ``POST /v1/chat/completions`` and
``POST /v1/embeddings``; ``FakeLLMServer("anthropic")`` answers
``POST /v1/messages``. Every request is recorded (path, headers, JSON body,
start and end times) and the number of requests in flight is tracked, so tests
check what was really sent. By default a request gets an answer built from the
schema it carries and from the first document in its prompt; a test queues
other behaviours (an HTTP error, malformed text, a stall) for the next requests.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any

import pytest

from cluster_assets.keywords import ClusterLabel
from cluster_assets.labeling import ClusterEvidence
from cluster_assets.spec import ClusterDefinition, parse_definition


# --- behaviours a test can queue ------------------------------------------------------------------
@dataclass
class Status:
    """Answer with an HTTP error in the provider's error format (``message`` may quote anything; a callable
    gets the request body, to echo what was sent, e.g. a media URL)."""

    code: int
    message: str | Callable[[dict], str] = "error"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Text:
    """A successful reply whose content is this text (e.g. malformed JSON)."""

    text: str


@dataclass
class Stall:
    """Hold the request this long before answering normally (the client should have given up)."""

    seconds: float


@dataclass
class Answer:
    """A successful reply with exactly this JSON object."""

    data: dict


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict
    started: float
    finished: float = 0.0
    input_tokens: int = 0  # the usage the reply reported
    output_tokens: int = 0


# --- request inspection ---------------------------------------------------------------------------
def user_content(body: dict) -> list[dict]:
    """The last user message's content as a list of parts, whatever the wire format."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def user_text(body: dict) -> str:
    return "\n\n".join(p["text"] for p in user_content(body) if p.get("type") == "text")


def media_urls(body: dict) -> list[str]:
    urls = []
    for part in user_content(body):
        if part.get("type") == "image_url":
            urls.append(part["image_url"]["url"])
        elif part.get("type") == "image":
            urls.append(part["source"]["url"])
    return urls


def sent_schema(body: dict) -> dict | None:
    """The structured-output schema the request carries (OpenAI ``response_format``, Anthropic ``output_config``)."""
    if "response_format" in body:
        return body["response_format"]["json_schema"]["schema"]
    if "output_config" in body:
        return body["output_config"]["format"]["schema"]
    return None


def prompt_schema(body: dict) -> dict:
    """The schema written in the prompt text (always there, whether or not structured output is on)."""
    text = user_text(body)
    start = text.index("(all fields required):\n") + len("(all fields required):\n")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def documents(body: dict) -> list[str]:
    """The texts of 'Document N:' blocks, in order."""
    return [m.strip() for m in re.findall(r"Document \d+:\n(.*?)(?=\n\nDocument \d+|\n\nAnswer with one JSON|$)",
                                         user_text(body), flags=re.DOTALL)]


def example_value(schema: dict, seed: str) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][len(seed) % len(schema["enum"])]
    if kind == "string":
        return f"{seed[:30]}"
    if kind == "number":
        return 0.5
    if kind == "integer":
        return 3
    if kind == "boolean":
        return True
    if kind == "array":
        return [example_value(schema["items"], w) for w in (seed.split()[:3] or ["x"])]
    if kind == "object":
        return {k: example_value(v, seed) for k, v in schema["properties"].items()}
    return seed


def default_answer(body: dict) -> dict:
    """An answer that fits the request's schema, labelled after its first document."""
    schema = sent_schema(body) or prompt_schema(body)
    docs = documents(body)
    first = docs[0].splitlines()[0] if docs else "media"
    answer = {name: example_value(sub, first) for name, sub in schema["properties"].items()}
    answer["label"] = f"About {first[:40]}"
    if "summary" in answer:
        answer["summary"] = f"{len(docs)} documents such as {first[:60]}"
    if "keywords" in answer:
        answer["keywords"] = first.split()[:5] or ["media"]
    answer["confidence"] = 0.9
    return answer


def reported_usage(payload: dict) -> tuple[int, int]:
    """(input, output) tokens of a completion reply in either wire format; (0, 0) for anything else."""
    usage = payload.get("usage") if "choices" in payload or payload.get("type") == "message" else None
    if not usage:
        return 0, 0
    return (usage.get("prompt_tokens", usage.get("input_tokens", 0)),
            usage.get("completion_tokens", usage.get("output_tokens", 0)))


def hashed_embedding(text: str, dims: int = 64) -> list[float]:
    """A bag-of-words vector: texts sharing words point the same way."""
    vector = [0.0] * dims
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % dims] += 1.0
    return vector


# --- the server -----------------------------------------------------------------------------------
class FakeLLMServer:
    def __init__(self, wire: str, delay: float = 0.0):
        assert wire in ("openai", "anthropic")
        self.wire = wire
        self.delay = delay  # every answer takes at least this long (to observe concurrency)
        self.requests: list[Recorded] = []
        self.script: deque = deque()
        self.answer = default_answer  # body -> answer dict
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # stop() waits for serve_forever's next poll: 0.5 s by default, at the end of every test
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    # lifecycle
    def start(self) -> "FakeLLMServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """What a client's ``base_url`` should be: OpenAI's includes ``/v1``, Anthropic's does not."""
        root = f"http://127.0.0.1:{self.port}"
        return root + "/v1" if self.wire == "openai" else root

    def queue(self, *behaviours) -> None:
        self.script.extend(behaviours)

    def completions(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(("/chat/completions", "/messages"))]

    def embeddings(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    # responses in each wire format
    def _ok(self, body: dict, text: str) -> dict:
        tokens_in = len(json.dumps(body)) // 4
        tokens_out = max(1, len(text) // 4)
        if self.wire == "openai":
            return {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text, "refusal": None}}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out},
            }
        return {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model", "fake"),
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
        }

    def _error(self, status: Status, body: dict) -> dict:
        message = status.message(body) if callable(status.message) else status.message
        if self.wire == "openai":
            return {"error": {"message": message, "type": "fake_error", "code": str(status.code)}}
        return {"type": "error", "error": {"type": "fake_error", "message": message}}

    def respond(self, path: str, body: dict) -> tuple[int, dict[str, str], dict]:
        if path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return 200, {}, {
                "object": "list", "model": body.get("model", "fake"),
                "data": [{"object": "embedding", "index": i, "embedding": hashed_embedding(t)}
                         for i, t in enumerate(inputs)],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        with self._lock:
            behaviour = self.script.popleft() if self.script else None
        if isinstance(behaviour, Stall):
            self._closing.wait(behaviour.seconds)
            behaviour = None
        if self.delay:
            self._closing.wait(self.delay)
        if isinstance(behaviour, Status):
            return behaviour.code, behaviour.headers, self._error(behaviour, body)
        if isinstance(behaviour, Text):
            return 200, {}, self._ok(body, behaviour.text)
        data = behaviour.data if isinstance(behaviour, Answer) else self.answer(body)
        return 200, {}, self._ok(body, json.dumps(data))

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                record = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()},
                                  json.loads(raw or b"{}"), time.monotonic())
                with server._lock:
                    server.requests.append(record)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, headers, payload = server.respond(self.path, record.body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                    record.finished = time.monotonic()
                record.input_tokens, record.output_tokens = reported_usage(payload)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


@pytest.fixture
def openai_server():
    server = FakeLLMServer("openai").start()
    yield server
    server.stop()


@pytest.fixture
def anthropic_server():
    server = FakeLLMServer("anthropic").start()
    yield server
    server.stop()


@pytest.fixture
def no_llm_environment(monkeypatch):
    """No real key or endpoint from the developer's shell can leak into a test."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                 "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


# --- definitions and evidence for the labeling tests -----------------------------------------------


KEY = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # what a leak would look like; asserted absent everywhere
# A gateway key no key-shaped pattern recognises: only the configured-secret scrubber can catch it.
GATEWAY_KEY = "gw_live_7f3a9c2e11b04d58a6e0"


def definition(**llm) -> ClusterDefinition:
    body = {
        "cluster_name": "shop",
        "source_collection_ids": ["products"],
        "feature_addresses": ["text_embedding"],
        "algorithm": "kmeans",
        "algorithm_config": {"num_clusters": 3},
        "llm_labeling": {"provider": "openai", "model_name": "fake-model", "max_retries": 3,
                         "timeout_seconds": 5, **llm},
    }
    return parse_definition(body)


def evidence(clusters: int = 3, documents: int = 3) -> list[ClusterEvidence]:
    """Clusters of products; every document also carries fields no mapping asks for."""
    out = []
    for c in range(clusters):
        reps = [{
            "document_id": f"p{c}-{i}",
            "title": f"product {c}-{i} title words",
            "metadata": {"department": f"department{c}", "internal_notes": f"SECRET-NOTE-{c}-{i}"},
            "document_blobs": [{"url": f"s3://media/images/{c}-{i}.png", "kind": "image"}],
            "source_blobs": [{"url": f"https://example.invalid/source/{c}-{i}.html"}],
        } for i in range(documents)]
        data = ClusterLabel(c, f"data label {c}", f"data summary {c}", [f"kw{c}", f"extra{c}"],
                            [r["document_id"] for r in reps], 0.25)
        out.append(ClusterEvidence(c, 10 * (clusters - c), [f"kw{c}", f"extra{c}"], reps, data))
    return out


def text_mappings(*paths: str) -> dict:
    return {"input_mappings": [{"input_key": "text", "source_type": "payload", "path": p} for p in paths]}


