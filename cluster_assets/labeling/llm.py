"""The LLM labeler: one request per cluster, a bounded number in flight, the data label as fallback.

For each cluster: the representative documents (most central first) go through
the input mappings; the prompt is built from the templates; the cache is asked
first; on a miss the provider is called (retries and parsing are the provider
base class's). A cluster whose call fails in the end keeps its data-derived
label, marked ``fallback``; the others are unaffected. Labels are optionally
de-duplicated, and the outcome's metadata counts calls, cache hits and misses,
retries, fallbacks, tokens and wall time.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
from cluster_assets.labeling import prompts as prompt_templates
from cluster_assets.labeling.prompts import (
    MAX_CLUSTERS_PER_REQUEST, Prompt, asks_for_clusters, build_batch_prompt, build_parent_prompt, build_prompt,
    cluster_ref,
)
from cluster_assets.labeling.providers.base import Completion, Provider
from cluster_assets.secrets import redact_url

MAX_LISTED = 20  # per-cluster details kept in metadata


@dataclass
class ClusterResult:
    label: ClusterLabel
    completion: Completion
    cache_hit: bool = False
    cache_miss: bool = False
    reason: str | None = None  # why this cluster fell back


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

    def documents_for(self, evidence: ClusterEvidence) -> tuple[list, list[set[int]]]:
        documents, missing = [], []
        for payload in evidence.representatives[: self.config.max_samples_per_cluster]:
            inputs = document_inputs(payload, self.mappings, self.config.sample_text_max_length)
            missing.append(inputs.missing)
            if inputs.parts:
                documents.append(inputs.parts)
        return documents, missing

    # --- one cluster ----------------------------------------------------------------------------
    def prompt_for(self, evidence: ClusterEvidence) -> tuple[Prompt, list[set[int]]]:
        documents, missing = self.documents_for(evidence)
        prompt = build_prompt(
            cluster_id=evidence.cluster_id, count=evidence.count, keywords=evidence.keywords,
            documents=documents, schema=self.schema, custom_prompt=self.config.custom_prompt,
            include_summary=self.config.include_summary, include_keywords=self.config.include_keywords,
        )
        return prompt, missing

    def key_for(self, prompt: Prompt) -> str:
        return cache_key(provider=self.provider.name, model=self.provider.model,
                         base_url=redact_url(self.provider.base_url),
                         prompt=prompt.fingerprint(), schema=self.schema)

    def label_one(self, evidence: ClusterEvidence, prompt: Prompt, has_documents: bool) -> ClusterResult:
        if not has_documents:
            return self.fallback(evidence, Completion(), "none of its documents has any of the mapped inputs")
        key = self.key_for(prompt)
        cached = self.cache.get(key) if self.cache else None
        if cached is not None:
            cached = self.provider.scrubber.value(cached)  # an entry written before answers were scrubbed
            try:
                answer = shape.parse_answer(json.dumps(cached), self.answer_schema)
                return ClusterResult(self.from_answer(evidence, answer), Completion(answer=answer), cache_hit=True)
            except shape.AnswerError:
                pass  # an entry from an older schema: ask again
        result = self.ask(evidence, prompt, key)
        result.cache_miss = self.cache is not None
        return result

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
        warnings: list[str] = []
        prompts, documents_seen, found = [], 0, [0] * len(self.mappings)
        for item in evidence:
            prompt, missing = self.prompt_for(item)
            prompts.append((prompt, any(len(m) < len(self.mappings) for m in missing) or not self.mappings))
            documents_seen += len(missing)
            for lacks in missing:
                for i in range(len(self.mappings)):
                    found[i] += i not in lacks
        for i, mapping in enumerate(self.mappings):
            if documents_seen and not found[i]:
                warnings.append(f"{describe_mapping(mapping, i)} was found in none of the {documents_seen} documents sent")
        has_docs = [has and bool(item.representatives) for (_, has), item in zip(prompts, evidence)]

        if self.batched:
            results = self.label_batched(evidence, [p for p, _ in prompts], has_docs)
        else:
            workers = max(1, min(self.config.max_concurrency, len(evidence)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-label") as pool:
                results = list(pool.map(lambda args: self.label_one(*args),
                                        [(item, prompt, has) for item, (prompt, _), has
                                         in zip(evidence, prompts, has_docs)]))

        labels = [r.label for r in results]
        metadata = self.metadata(results)
        if self.config.use_embedding_dedup and len(labels) > 1:
            labels, dedup_meta, dedup_warning = self.dedup(labels, evidence)
            metadata.update(dedup_meta)
            if dedup_warning:
                warnings.append(dedup_warning)
        if metadata.get("fallback_reason"):
            warnings.append(f"labels fall back to data-derived labels for {metadata['fallbacks']} of "
                            f"{len(results)} clusters: {metadata['fallback_reason']}")
        metadata["labeling_wall_s"] = round(time.perf_counter() - start, 3)
        return LabelingOutcome(labels, metadata["labeling_source"], metadata, warnings=warnings,
                               extra_types=shape.extra_types(self.config.response_shape))

    # --- several clusters per request ($clusters in custom_prompt) -------------------------------
    def label_batched(self, evidence: list[ClusterEvidence], prompts: list[Prompt],
                      has_docs: list[bool]) -> list[ClusterResult]:
        """The clusters not cached, at most ``MAX_CLUSTERS_PER_REQUEST`` per request; the answers mapped back
        by cluster id. Each cluster is cached under its own prompt's key, as in one-per-request labeling."""
        results: list[ClusterResult | None] = [None] * len(evidence)
        todo: list[tuple[int, str]] = []
        for i, (item, prompt, has) in enumerate(zip(evidence, prompts, has_docs)):
            if not has:
                results[i] = self.fallback(item, Completion(), "none of its documents has any of the mapped inputs")
                continue
            key = self.key_for(prompt)
            cached = self.cache.get(key) if self.cache else None
            if cached is not None:
                try:
                    answer = shape.parse_answer(json.dumps(self.provider.scrubber.value(cached)), self.answer_schema)
                    results[i] = ClusterResult(self.from_answer(item, answer), Completion(answer=answer),
                                               cache_hit=True)
                    continue
                except shape.AnswerError:
                    pass
            todo.append((i, key))
        groups = [todo[k:k + MAX_CLUSTERS_PER_REQUEST] for k in range(0, len(todo), MAX_CLUSTERS_PER_REQUEST)]
        workers = max(1, min(self.config.max_concurrency, len(groups)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-label") as pool:
            for group, answered in zip(groups, pool.map(lambda g: self.ask_group(evidence, g), groups)):
                for (i, _), result in zip(group, answered):
                    results[i] = result
        return results  # type: ignore[return-value]

    def ask_group(self, evidence: list[ClusterEvidence], group: list[tuple[int, str]]) -> list[ClusterResult]:
        items = [evidence[i] for i, _ in group]
        prompt = build_batch_prompt(
            custom_prompt=self.config.custom_prompt, schema=self.schema,
            clusters=[(e.cluster_id, e.count, e.keywords, self.documents_for(e)[0]) for e in items])
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
                out.append(self.fallback(item, counted, reason))
                continue
            if self.cache:
                self.cache.put(key, answer)
            out.append(ClusterResult(self.from_answer(item, answer),
                                     dataclasses.replace(counted, answer=answer), cache_miss=self.cache is not None))
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
            return self.label_one(evidence, prompt, has_documents=True)

        workers = max(1, min(self.config.max_concurrency, len(parents)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-parent") as pool:
            results = list(pool.map(one, parents))
        metadata = self.metadata(results)
        metadata["labeling_wall_s"] = round(time.perf_counter() - start, 3)
        return LabelingOutcome([r.label for r in results], metadata["labeling_source"], metadata)

    def metadata(self, results: Sequence[ClusterResult]) -> dict:
        fallbacks = [r for r in results if r.reason is not None]
        source = "llm" if not fallbacks else "fallback" if len(fallbacks) == len(results) else "mixed"
        metadata = {
            "labeling_source": source,
            "llm_provider": self.provider.name,
            "llm_model": self.provider.model,
            "llm_calls": sum(r.completion.calls for r in results),
            "cache_hits": sum(r.cache_hit for r in results),
            "cache_misses": sum(r.cache_miss for r in results),
            "cache_enabled": self.cache is not None,
            "retries": sum(r.completion.retries for r in results),
            "fallbacks": len(fallbacks),
            "input_tokens": sum(r.completion.input_tokens for r in results),
            "output_tokens": sum(r.completion.output_tokens for r in results),
            "max_concurrency": self.config.max_concurrency,
            "structured_output": self.provider.structured,
        }
        if fallbacks:
            reasons = list(dict.fromkeys(r.reason for r in fallbacks))
            metadata["fallback_reason"] = reasons[0] if len(reasons) == 1 else f"{reasons[0]} (and {len(reasons) - 1} other reasons)"
            metadata["fallback_clusters"] = [{"cluster_id": r.label.cluster_id, "reason": r.reason}
                                             for r in fallbacks[:MAX_LISTED]]
        return metadata

    def dedup(self, labels: list[ClusterLabel], evidence: list[ClusterEvidence]) -> tuple[list[ClusterLabel], dict, str | None]:
        names = [l.label for l in labels]
        embed = None if self.provider.stopped else self.provider.embed
        vectors, method, warning = dd.label_vectors(names, embed)
        ids, sizes = [l.cluster_id for l in labels], [e.count for e in evidence]
        threshold, strategy = self.config.embedding_similarity_threshold, self.config.dedup_strategy
        meta = {"dedup_method": method, "dedup_threshold": threshold, "dedup_strategy": strategy,
                "embedding_calls": int(method == "provider")}
        if strategy == "merge":
            merged_names, merged_with = dd.merge_groups(ids, names, sizes, vectors, threshold)
            out = [dataclasses.replace(l, label=n, extra={**l.extra, "merged_with": m})
                   for l, n, m in zip(labels, merged_names, merged_with)]
            meta["dedup_merged_count"] = sum(1 for m in merged_with if m)
            return out, meta, warning
        if strategy == "contrast":
            labels, meta["dedup_reasked"] = self.contrast(labels, evidence, dd.near_duplicates(ids, names, sizes, vectors, threshold))
            names = [l.label for l in labels]
            vectors, _, again = dd.label_vectors(names, embed)
            meta["embedding_calls"] += int(method == "provider")
            warning = warning or again
        new_names, renamed = dd.dedup_labels(
            ids, names, [l.keywords or e.keywords for l, e in zip(labels, evidence)], sizes, vectors, threshold)
        out = [dataclasses.replace(l, label=n) if n != l.label else l for l, n in zip(labels, new_names)]
        meta.update({
            "dedup_renamed": [dataclasses.asdict(r) for r in renamed[:MAX_LISTED]],
            "dedup_renamed_count": len(renamed),
        })
        return out, meta, warning

    def contrast(self, labels: list[ClusterLabel], evidence: list[ClusterEvidence],
                 duplicates: dict[int, list[int]]) -> tuple[list[ClusterLabel], int]:
        """Ask again for each near-duplicate cluster, showing the labels and keywords it must differ from."""
        out = list(labels)

        def one(i: int) -> ClusterResult:
            prompt, _ = self.prompt_for(evidence[i])
            neighbours = "\n".join(f"- {labels[j].label!r} (keywords: {', '.join(labels[j].keywords[:8])})"
                                   for j in duplicates[i])
            extra = Part(TEXT, prompt_templates.CONTRAST_PROMPT.substitute(neighbours=neighbours))
            contrasted = Prompt(prompt.system, (*prompt.parts, extra))
            return self.label_one(evidence[i], contrasted, True)  # a cached contrast answer is reused

        todo = sorted(duplicates)
        workers = max(1, min(self.config.max_concurrency, len(todo) or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-contrast") as pool:
            for i, result in zip(todo, pool.map(one, todo)):
                if result.label.source == "llm":
                    out[i] = result.label
        return out, len(todo)
