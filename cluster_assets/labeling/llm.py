"""The LLM labeler: one request per cluster, a bounded number in flight, the data label as fallback.

For each cluster: the representative documents (most central first) go through
the input mappings and the prompt is built from the templates, once (a batch or
a contrast re-ask reuses them); the cache is asked first; on a miss the provider
is called (retries and parsing are the provider base class's). A cluster whose
call fails in the end keeps its data-derived label, marked ``fallback``; the
others are unaffected. Labels are optionally de-duplicated, and the outcome's
metadata counts calls, cache hits and misses, retries, fallbacks, tokens (of
every request, contrast re-asks included) and wall time.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cluster_assets.keywords import ClusterLabel, bounded
from cluster_assets.labeling import dedup as dd
from cluster_assets.labeling import media
from cluster_assets.labeling import shape
from cluster_assets.labeling.base import ClusterEvidence, LabelingOutcome
from cluster_assets.labeling.cache import LabelCache, cache_key
from cluster_assets.labeling.inputs import (
    TEXT, Part, Presigner, check_modalities, describe_mapping, document_inputs, presign_parts, s3_presigner,
    sigv4_s3_client,
)
from cluster_assets.labeling.prompts import (
    CONTRAST_PROMPT, MAX_CLUSTERS_PER_REQUEST, Prompt, asks_for_clusters, build_batch_prompt, build_parent_prompt,
    build_prompt, cluster_ref,
)
from cluster_assets.labeling.providers.base import Completion, Provider
from cluster_assets.secrets import redact_url

MAX_LISTED = 20  # per-cluster details kept in metadata
NO_DOCUMENTS = "none of its documents has any of the mapped inputs"


@dataclass
class ClusterRequest:
    """One cluster's request, built once: sent alone, listed in a batch, or sent again with a contrast note."""

    evidence: ClusterEvidence
    documents: list[list[Part]]  # the mapped inputs of each document that has any, most central first
    missing: list[set[int]]  # per document looked at, the indices of the mappings it lacks
    prompt: Prompt


@dataclass
class ClusterResult:
    label: ClusterLabel
    completion: Completion
    cache_hit: bool = False
    cache_miss: bool = False
    reason: str | None = None  # why this cluster fell back


@dataclass
class Deduped:
    labels: list[ClusterLabel]
    metadata: dict
    warning: str | None = None
    reasked: list[ClusterResult] = field(default_factory=list)  # the contrast requests


def default_presigner(expiry_seconds: int) -> Presigner:
    """A SigV4 boto3 S3 client from the usual AWS variables (AWS_ENDPOINT_URL too), made on first use."""
    holder: dict = {}

    def presign(url: str) -> str:
        if "fn" not in holder:
            holder["fn"] = s3_presigner(sigv4_s3_client(), expiry_seconds)
        return holder["fn"](url)

    return presign


class LLMLabeler:
    def __init__(self, config, provider: Provider, cache: LabelCache | None = None, presign: Presigner | None = None):
        self.config = config
        self.provider = provider
        self.cache = cache
        self.presign = presign or default_presigner(getattr(config, "presign_expiry_seconds", 3600))
        self.mappings = list(config.labeling_inputs.input_mappings) if config.labeling_inputs else []
        # Before any call: a modality the provider cannot take is a configuration error.
        check_modalities(self.mappings, provider.name, provider.model, provider.modalities())
        self.schema = shape.response_schema(config.response_shape, config.include_summary, config.include_keywords)
        self.extra = shape.extra_fields(config.response_shape)
        self.batched = asks_for_clusters(config.custom_prompt)
        # a custom prompt writes its own answer format (the reference's asks for cluster_id, label, keywords):
        # only the label is required of its answers, the data fill in what they leave out
        self.answer_schema = {**self.schema, "required": ["label"]} if config.custom_prompt else self.schema

    def concurrently(self, work: Callable, items: Sequence, thread_name: str) -> list:
        """``work`` over ``items``, at most ``max_concurrency`` at once, results in order."""
        workers = max(1, min(self.config.max_concurrency, len(items)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name) as pool:
            return list(pool.map(work, items))

    def request_for(self, evidence: ClusterEvidence) -> ClusterRequest:
        documents, missing = [], []
        for payload in evidence.representatives[: self.config.max_samples_per_cluster]:
            inputs = document_inputs(payload, self.mappings, self.config.sample_text_max_length)
            missing.append(inputs.missing)
            if inputs.parts:
                documents.append(inputs.parts)
        prompt = build_prompt(
            cluster_id=evidence.cluster_id, count=evidence.count, keywords=evidence.keywords,
            documents=documents, schema=self.schema, custom_prompt=self.config.custom_prompt,
            include_summary=self.config.include_summary, include_keywords=self.config.include_keywords,
        )
        return ClusterRequest(evidence, documents, missing, prompt)

    def unfound_mappings(self, requests: list[ClusterRequest]) -> list[str]:
        """A warning for each mapping that none of the documents looked at has."""
        lacks = [missing for request in requests for missing in request.missing]
        return [f"{describe_mapping(mapping, i)} was found in none of the {len(lacks)} documents sent"
                for i, mapping in enumerate(self.mappings) if lacks and all(i in m for m in lacks)]

    # --- one cluster ----------------------------------------------------------------------------
    def key_for(self, prompt: Prompt) -> str:
        return cache_key(provider=self.provider.name, model=self.provider.model,
                         base_url=redact_url(self.provider.base_url),
                         prompt=prompt.fingerprint(), schema=self.schema)

    def label_request(self, request: ClusterRequest) -> ClusterResult:
        if not request.documents:
            return self.fallback(request.evidence, Completion(), NO_DOCUMENTS)
        return self.label_one(request.evidence, request.prompt)

    def label_one(self, evidence: ClusterEvidence, prompt: Prompt) -> ClusterResult:
        key = self.key_for(prompt)
        cached = self.cached(evidence, key)
        if cached is not None:
            return cached
        result = self.ask(evidence, prompt, key)
        result.cache_miss = self.cache is not None
        return result

    def cached(self, evidence: ClusterEvidence, key: str) -> ClusterResult | None:
        """The cluster's answer from the cache; None without a cache, an entry, or with an entry the schema refuses."""
        entry = self.cache.get(key) if self.cache else None
        if entry is None:
            return None
        try:
            # scrubbed again: an entry written before answers were scrubbed
            answer = shape.check_answer(self.provider.scrubber.value(entry), self.answer_schema)
        except shape.AnswerError:
            return None  # an entry from an older schema: ask again
        return ClusterResult(self.from_answer(evidence, answer), Completion(answer=answer), cache_hit=True)

    def ask(self, evidence: ClusterEvidence, prompt: Prompt, key: str) -> ClusterResult:
        try:
            sent = self.sendable(prompt)
        except Exception as exc:  # noqa: BLE001 - media that cannot be signed or read fails this cluster only
            return self.fallback(evidence, Completion(), self.media_failure(exc))
        completion = self.provider.complete(
            sent, self.schema, lambda text, _: shape.parse_answer(text, self.answer_schema, evidence.cluster_id))
        if completion.answer is None:
            return self.fallback(evidence, completion, completion.error or "no answer")
        if self.cache:
            self.cache.put(key, completion.answer)
        return ClusterResult(self.from_answer(evidence, completion.answer), completion)

    def sendable(self, prompt: Prompt) -> Prompt:
        """The prompt as sent: s3:// media presigned, video and audio in the form the provider takes them
        (after the cache key is made: the key holds the URLs, never signatures or media bytes)."""
        parts = presign_parts(prompt.parts, self.presign)
        return Prompt(prompt.system, tuple(media.prepare(parts, self.provider.media)))

    def media_failure(self, exc: Exception) -> str:
        what = "read a media input" if isinstance(exc, (media.MediaError, OSError)) else "presign a media URL"
        return f"cannot {what}: {self.provider.scrub(str(exc))[:200]}"

    def from_answer(self, evidence: ClusterEvidence, answer: dict) -> ClusterLabel:
        data = evidence.data_label
        keywords = answer["keywords"] if self.config.include_keywords and "keywords" in answer else data.keywords
        if not isinstance(keywords, list):
            keywords = [str(keywords)]
        summary = answer["summary"] if self.config.include_summary and "summary" in answer else data.summary
        return bounded(ClusterLabel(
            cluster_id=evidence.cluster_id,
            label=str(answer["label"]).strip(),
            summary=summary if isinstance(summary, str) else json.dumps(summary, ensure_ascii=False),
            keywords=[str(k) for k in keywords],
            representative_ids=list(data.representative_ids),
            confidence=float(answer.get("confidence", data.confidence)),
            source="llm",
            extra={name: answer.get(name) for name in self.extra},
        ))

    def fallback(self, evidence: ClusterEvidence, completion: Completion, reason: str) -> ClusterResult:
        label = dataclasses.replace(evidence.data_label, source="fallback",
                                    extra={name: None for name in self.extra})
        return ClusterResult(label, completion, reason=reason)

    # --- every cluster --------------------------------------------------------------------------
    def label(self, evidence: list[ClusterEvidence]) -> LabelingOutcome:
        start = time.perf_counter()
        requests = [self.request_for(item) for item in evidence]
        warnings = self.unfound_mappings(requests)
        if self.batched:
            results = self.label_batched(requests)
        else:
            results = self.concurrently(self.label_request, requests, "llm-label")

        deduped = Deduped([r.label for r in results], {})
        if self.config.use_embedding_dedup and len(results) > 1:
            deduped = self.dedup(deduped.labels, requests)
            if deduped.warning:
                warnings.append(deduped.warning)
        metadata = {**self.metadata(results, deduped.reasked), **deduped.metadata}
        if metadata.get("fallback_reason"):
            warnings.append(f"labels fall back to data-derived labels for {metadata['fallbacks']} of "
                            f"{len(results)} clusters: {metadata['fallback_reason']}")
        metadata["labeling_wall_s"] = round(time.perf_counter() - start, 3)
        return LabelingOutcome(deduped.labels, metadata["labeling_source"], metadata, warnings=warnings,
                               extra_types=shape.extra_types(self.config.response_shape))

    # --- several clusters per request ($clusters in custom_prompt) -------------------------------
    def label_batched(self, requests: list[ClusterRequest]) -> list[ClusterResult]:
        """The clusters not cached, at most ``MAX_CLUSTERS_PER_REQUEST`` per request; the answers mapped back
        by cluster id. Each cluster is cached under its own prompt's key, as in one-per-request labeling."""
        results: list[ClusterResult | None] = [None] * len(requests)
        todo: list[tuple[int, str]] = []
        for i, request in enumerate(requests):
            if not request.documents:
                results[i] = self.fallback(request.evidence, Completion(), NO_DOCUMENTS)
                continue
            key = self.key_for(request.prompt)
            results[i] = self.cached(request.evidence, key)
            if results[i] is None:
                todo.append((i, key))
        groups = [todo[k:k + MAX_CLUSTERS_PER_REQUEST] for k in range(0, len(todo), MAX_CLUSTERS_PER_REQUEST)]
        answered = self.concurrently(lambda group: self.ask_group([(requests[i], key) for i, key in group]),
                                     groups, "llm-label")
        for group, group_results in zip(groups, answered):
            for (i, _), result in zip(group, group_results):
                results[i] = result
        return results  # type: ignore[return-value]

    def batch_prompt(self, requests: list[ClusterRequest]) -> Prompt:
        """The custom prompt with ``requests``' clusters listed where ``$clusters`` stands."""
        return build_batch_prompt(
            custom_prompt=self.config.custom_prompt, schema=self.schema,
            clusters=[(r.evidence.cluster_id, r.evidence.count, r.evidence.keywords, r.documents) for r in requests])

    def ask_group(self, group: list[tuple[ClusterRequest, str]]) -> list[ClusterResult]:
        items = [request.evidence for request, _ in group]
        prompt = self.batch_prompt([request for request, _ in group])
        try:
            sent = self.sendable(prompt)
        except Exception as exc:  # noqa: BLE001
            return [self.fallback(e, Completion(), self.media_failure(exc)) for e in items]
        # structured output takes an object at the top: the array is its one field
        schema = shape.object_schema({"clusters": {"type": "array", "items": shape.object_schema(
            {"cluster_id": {"type": "string"}, **self.schema["properties"]})}})
        completion = self.provider.complete(sent, schema, lambda text, _: {
            "clusters": shape.parse_cluster_list(text, self.answer_schema)})
        answers = (completion.answer or {}).get("clusters", {})
        out = []
        for n, ((_, key), item) in enumerate(zip(group, items)):
            # the request's calls, tokens and retries are counted once, on its first cluster
            counted = completion if n == 0 else Completion()
            answer = answers.get(item.cluster_id)
            if answer is None:
                reason = completion.error or f"the answer has no entry for {cluster_ref(item.cluster_id)}"
                result = self.fallback(item, counted, reason)
            else:
                if self.cache:
                    self.cache.put(key, answer)
                result = ClusterResult(self.from_answer(item, answer), dataclasses.replace(counted, answer=answer))
            result.cache_miss = self.cache is not None  # looked up and not found, as in one-per-request labeling
            out.append(result)
        return out

    def label_parents(self, parents: list) -> LabelingOutcome:
        """Name a hierarchy's parents (``hierarchy.ParentEvidence``) from their children's labels and
        keywords, with the same cache, concurrency and per-node fallback as the clusters."""
        start = time.perf_counter()

        def one(parent) -> ClusterResult:
            evidence = ClusterEvidence(parent.node_id, parent.count, parent.keywords, [], parent.data_label)
            prompt = build_parent_prompt(node_id=parent.node_id, count=parent.count, children=parent.prompt_text(),
                                         schema=self.schema, include_summary=self.config.include_summary,
                                         include_keywords=self.config.include_keywords)
            return self.label_one(evidence, prompt)

        results = self.concurrently(one, parents, "llm-parent")
        metadata = self.metadata(results)
        metadata["labeling_wall_s"] = round(time.perf_counter() - start, 3)
        return LabelingOutcome([r.label for r in results], metadata["labeling_source"], metadata)

    def metadata(self, results: Sequence[ClusterResult], reasked: Sequence[ClusterResult] = ()) -> dict:
        """What the labels cost and where they came from. ``reasked``: the contrast requests, whose calls,
        retries, tokens and cache lookups are paid like the others (their clusters are ``results``')."""
        fallbacks = [r for r in results if r.reason is not None]
        source = "llm" if not fallbacks else "fallback" if len(fallbacks) == len(results) else "mixed"
        requests = [*results, *reasked]
        metadata = {
            "labeling_source": source,
            "llm_provider": self.provider.name,
            "llm_model": self.provider.model,
            "llm_calls": sum(r.completion.calls for r in requests),
            "cache_hits": sum(r.cache_hit for r in requests),
            "cache_misses": sum(r.cache_miss for r in requests),
            "cache_enabled": self.cache is not None,
            "retries": sum(r.completion.retries for r in requests),
            "fallbacks": len(fallbacks),
            "input_tokens": sum(r.completion.input_tokens for r in requests),
            "output_tokens": sum(r.completion.output_tokens for r in requests),
            "max_concurrency": self.config.max_concurrency,
            "structured_output": self.provider.structured,
        }
        if fallbacks:
            reasons = list(dict.fromkeys(r.reason for r in fallbacks))
            metadata["fallback_reason"] = reasons[0] if len(reasons) == 1 else f"{reasons[0]} (and {len(reasons) - 1} other reasons)"
            metadata["fallback_clusters"] = [{"cluster_id": r.label.cluster_id, "reason": r.reason}
                                             for r in fallbacks[:MAX_LISTED]]
        return metadata

    def dedup(self, labels: list[ClusterLabel], requests: list[ClusterRequest]) -> Deduped:
        evidence = [r.evidence for r in requests]
        names = [l.label for l in labels]
        embed = None if self.provider.stopped else self.provider.embed
        vectors, method, warning = dd.label_vectors(names, embed)
        ids, sizes = [l.cluster_id for l in labels], [e.count for e in evidence]
        compared = dd.ComparedLabels.of(ids, names, sizes, vectors)
        threshold, strategy = self.config.embedding_similarity_threshold, self.config.dedup_strategy
        meta = {"dedup_method": method, "dedup_threshold": threshold, "dedup_strategy": strategy,
                "embedding_calls": int(method == "provider")}
        if strategy == "merge":
            merged_names, merged_with = dd.merge_groups(compared, threshold)
            out = [dataclasses.replace(l, label=n, extra={**l.extra, "merged_with": m})
                   for l, n, m in zip(labels, merged_names, merged_with)]
            meta["dedup_merged_count"] = sum(1 for m in merged_with if m)
            return Deduped(out, meta, warning)
        reasked: list[ClusterResult] = []
        if strategy == "contrast":
            labels, reasked = self.contrast(labels, requests, dd.near_duplicates(compared, threshold))
            meta["dedup_reasked"] = len(reasked)
            if [l.label for l in labels] != names:  # the new labels are compared again, with their own vectors
                names = [l.label for l in labels]
                vectors, again_method, again = dd.label_vectors(names, embed)
                meta["embedding_calls"] += int(again_method == "provider")
                warning = warning or again
                compared = dd.ComparedLabels.of(ids, names, sizes, vectors)
        new_names, renamed = dd.dedup_labels(compared, [l.keywords or e.keywords for l, e in zip(labels, evidence)],
                                             threshold)
        out = [dataclasses.replace(l, label=n) if n != l.label else l for l, n in zip(labels, new_names)]
        meta.update({
            "dedup_renamed": [dataclasses.asdict(r) for r in renamed[:MAX_LISTED]],
            "dedup_renamed_count": len(renamed),
        })
        return Deduped(out, meta, warning, reasked)

    def contrast(self, labels: list[ClusterLabel], requests: list[ClusterRequest],
                 duplicates: dict[int, list[int]]) -> tuple[list[ClusterLabel], list[ClusterResult]]:
        """Ask again for each near-duplicate cluster, its prompt showing the labels and keywords it must differ
        from; the new labels and every re-ask's result (cached answers are reused)."""
        out = list(labels)

        def one(i: int) -> ClusterResult:
            neighbours = "\n".join(f"- {labels[j].label!r} (keywords: {', '.join(labels[j].keywords[:8])})"
                                   for j in duplicates[i])
            note = Part(TEXT, CONTRAST_PROMPT.substitute(neighbours=neighbours))
            prompt = self.batch_prompt([requests[i]]) if self.batched else requests[i].prompt
            return self.label_one(requests[i].evidence, Prompt(prompt.system, (*prompt.parts, note)))

        todo = [i for i in sorted(duplicates) if requests[i].documents]  # without documents: nothing to ask from
        results = self.concurrently(one, todo, "llm-contrast")
        for i, result in zip(todo, results):
            if result.label.source == "llm":
                out[i] = result.label
        return out, results
