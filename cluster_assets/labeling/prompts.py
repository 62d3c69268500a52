"""Prompt templates (data, not code) and their assembly into one request per cluster.

Templates use ``string.Template`` placeholders. A definition's ``custom_prompt``
replaces ``CLUSTER_PROMPT`` and may use the same placeholders: ``$cluster_id``,
``$count``, ``$keywords``, ``$num_documents``. The documents and the answer
format are always appended, since the answer must be parseable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from string import Template

from cluster_assets.labeling.inputs import TEXT, Part
from cluster_assets.secrets import redact_url

SYSTEM_PROMPT = Template(
    "You name clusters of similar documents so that people can browse a large collection. "
    "Be specific and concrete; prefer the words the documents themselves use. "
    "Answer with $answer and nothing else."
)
ONE_ANSWER = "a single JSON object"
BATCH_ANSWER = "JSON"  # a request about several clusters is answered with an array

CLUSTER_PROMPT = Template(
    "Cluster $cluster_id holds $count documents. Its most distinctive terms are: $keywords.\n"
    "Below are the $num_documents documents nearest its centre, most central first. "
    "Give the cluster a short label (2-6 words) that names what these documents have in common "
    "and tells this cluster apart from others$summary_clause$keywords_clause, and rate your confidence "
    "that the label fits every document shown, from 0 to 1."
)
PARENT_PROMPT = Template(
    "Group $cluster_id holds $count documents, gathered from the sub-clusters listed below with their "
    "labels and keywords. Give the group a short label (2-5 words) for the broader topic its sub-clusters "
    "share$summary_clause$keywords_clause, and rate your confidence that the label fits every sub-cluster, "
    "from 0 to 1.\n\n$children"
)
CONTRAST_PROMPT = Template(
    "Other clusters of this collection already carry labels close to the one this cluster would get:\n"
    "$neighbours\nName what tells THIS cluster apart from them: its label must differ from theirs."
)
SUMMARY_CLAUSE = ", a one- or two-sentence summary"
KEYWORDS_CLAUSE = ", 3 to 8 keywords"

DOCUMENT = Template("Document $number:\n$text")
DOCUMENT_MEDIA_ONLY = Template("Document $number (media follows):")

RESPONSE_FORMAT = Template(
    "Answer with one JSON object that matches this JSON schema exactly (all fields required):\n$schema"
)

# A custom_prompt holding $clusters asks about several clusters at once (the reference's form:
# "Return JSON array: [{"cluster_id": "cl_0", ...}]"): the clusters are listed where $clusters stands.
CLUSTERS_PLACEHOLDER = "$clusters"
MAX_CLUSTERS_PER_REQUEST = 20
BATCH_CLUSTER = Template("Cluster cl_$cluster_id holds $count documents. Its most distinctive terms are: $keywords.")
BATCH_RESPONSE_FORMAT = Template(
    "Answer with a JSON array holding one object per cluster above, each with its \"cluster_id\" "
    "(\"cl_<number>\") and the fields of this JSON schema (all fields required):\n$schema"
)


@dataclass(frozen=True)
class Prompt:
    """One cluster's request: a system text and an ordered list of parts (text and media)."""

    system: str
    parts: tuple[Part, ...]

    def fingerprint(self) -> dict:
        """What the answer depends on, for the cache key: media URLs without their credentials
        (a presigned URL's signature must not reach the key, and a fresh one is the same media)."""
        return {"system": self.system,
                "parts": [[p.kind, p.value if p.kind == TEXT else redact_url(p.value)] for p in self.parts]}


def build_prompt(*, cluster_id: int, count: int, keywords: list[str], documents: list[list[Part]],
                 schema: dict, custom_prompt: str | None, include_summary: bool, include_keywords: bool) -> Prompt:
    values = {
        "cluster_id": cluster_id,
        "count": count,
        "keywords": keyword_list(keywords),
        "num_documents": len(documents),
        "summary_clause": SUMMARY_CLAUSE if include_summary else "",
        "keywords_clause": KEYWORDS_CLAUSE if include_keywords else "",
    }
    template = Template(custom_prompt) if custom_prompt else CLUSTER_PROMPT
    parts = [Part(TEXT, template.safe_substitute(values)), *document_parts(documents),
             Part(TEXT, RESPONSE_FORMAT.substitute(schema=json.dumps(schema, indent=1)))]
    return Prompt(SYSTEM_PROMPT.substitute(answer=ONE_ANSWER), tuple(parts))


def keyword_list(keywords: list[str]) -> str:
    return ", ".join(keywords[:10]) or "(none found)"


def document_parts(documents: list[list[Part]]) -> list[Part]:
    """Each document as a numbered text block, its media parts right after it."""
    parts: list[Part] = []
    for number, doc_parts in enumerate(documents, start=1):
        text = "\n".join(p.value for p in doc_parts if p.kind == TEXT)
        parts.append(Part(TEXT, DOCUMENT.substitute(number=number, text=text) if text
                          else DOCUMENT_MEDIA_ONLY.substitute(number=number)))
        parts.extend(p for p in doc_parts if p.kind != TEXT)
    return parts


def asks_for_clusters(custom_prompt: str | None) -> bool:
    return bool(custom_prompt) and CLUSTERS_PLACEHOLDER in custom_prompt


def cluster_ref(cluster_id: int) -> str:
    return f"cl_{cluster_id}"


def build_batch_prompt(*, custom_prompt: str, clusters: list[tuple[int, int, list[str], list[list[Part]]]],
                       schema: dict) -> Prompt:
    """One request about several clusters: ``clusters`` holds (cluster_id, count, keywords, documents) each;
    the prompt's text stands around the listing, and the answer is asked for as a JSON array."""
    before, _, after = custom_prompt.partition(CLUSTERS_PLACEHOLDER)
    values = {"num_clusters": len(clusters)}
    parts: list[Part] = []
    if before.strip():
        parts.append(Part(TEXT, Template(before).safe_substitute(values)))
    for cluster_id, count, keywords, documents in clusters:
        parts.append(Part(TEXT, BATCH_CLUSTER.substitute(cluster_id=cluster_id, count=count,
                                                         keywords=keyword_list(keywords))))
        parts.extend(document_parts(documents))
    if after.strip():
        parts.append(Part(TEXT, Template(after).safe_substitute(values)))
    parts.append(Part(TEXT, BATCH_RESPONSE_FORMAT.substitute(schema=json.dumps(schema, indent=1))))
    return Prompt(SYSTEM_PROMPT.substitute(answer=BATCH_ANSWER), tuple(parts))


def merged_parts(parts: tuple[Part, ...] | list[Part]) -> list[Part]:
    """Adjacent text parts joined by a blank line: fewer, larger blocks for the transports."""
    out: list[Part] = []
    for part in parts:
        if part.kind == TEXT and out and out[-1].kind == TEXT:
            out[-1] = Part(TEXT, out[-1].value + "\n\n" + part.value)
        else:
            out.append(part)
    return out


def build_parent_prompt(*, node_id: int, count: int, children: str, schema: dict,
                        include_summary: bool, include_keywords: bool) -> Prompt:
    """A hierarchy parent's request: its children's labels and keywords, never raw documents."""
    text = PARENT_PROMPT.substitute(
        cluster_id=node_id, count=count, children=children,
        summary_clause=SUMMARY_CLAUSE if include_summary else "",
        keywords_clause=KEYWORDS_CLAUSE if include_keywords else "",
    )
    parts = (Part(TEXT, text), Part(TEXT, RESPONSE_FORMAT.substitute(schema=json.dumps(schema, indent=1))))
    return Prompt(SYSTEM_PROMPT.substitute(answer=ONE_ANSWER), parts)
