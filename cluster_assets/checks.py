"""Asset checks on each definition's fit, over every file's assignments: drift, noise share, cluster sizes.

They are declared on ``<cluster>/labels``, the stage that completes a fit, and evaluated in
its step (checks stay off the per-file partitioned assets: partitioned checks are a preview
feature in Dagster 1.13). Thresholds come from the definition's ``checks`` block. A failing
check is a WARN by default; with ``checks.blocking: true`` it is an ERROR on a blocking check:
the fit does not become current, and the enriched collection and the map are not
materialized from it.

Drift compares the current fit's assignments with the previous complete fit's, file by file;
the first fit has none and its drift check passes, saying so.
"""


from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from cluster_assets import drift as measures
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.outputs import fit_files
from cluster_assets.stages.sample import source_files

CHECKED_STAGE = "labels"
CHECK_NAMES = ("drift", "noise_share", "cluster_sizes")
DESCRIPTIONS = {
    "drift": "Share of documents (present in both runs) that changed cluster since the previous run, "
             "after matching cluster ids; the adjusted Rand index is shown beside it.",
    "noise_share": "Share of documents left as noise (cluster_id -1).",
    "cluster_sizes": "No empty cluster (an id in 0..k-1 with too few documents), at least one cluster, "
                     "and no giant cluster holding most documents.",
}


def checked_key(spec: ClusterDefinition) -> dg.AssetKey:
    """The asset the checks sit on: the fit's labels, which aggregate every file's assignments."""
    return dg.AssetKey([spec.cluster_name, CHECKED_STAGE])


def severity_of(spec: ClusterDefinition) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if spec.checks.blocking else dg.AssetCheckSeverity.WARN


def check_specs(spec: ClusterDefinition) -> list[dg.AssetCheckSpec]:
    """The checks of a definition, declared on its ``labels`` asset (evaluated in the same step)."""
    if not spec.checks.enabled:
        return []
    config = spec.checks
    thresholds = {
        "drift": f"at most {config.max_changed_share:.0%} of documents change cluster",
        "noise_share": f"at most {config.max_noise_share:.0%} noise",
        "cluster_sizes": f"every cluster >= {config.min_cluster_size} documents, none above "
                         f"{config.max_cluster_share:.0%} of them",
    }
    return [
        dg.AssetCheckSpec(name, asset=checked_key(spec), blocking=config.blocking,
                          description=f"{DESCRIPTIONS[name]} Passes when {thresholds[name]}.")
        for name in CHECK_NAMES
    ]


def fit_assignments(storage, spec: ClusterDefinition, fit_id: str) -> pa.Table | None:
    """Every current file's assignments in one fit (document_id, cluster_id); None when it has none."""
    current = set(source_files(storage, spec))
    files = [p for p in fit_files(storage, spec.cluster_name, fit_id) if p in current]
    if not files:
        return None
    return pa.concat_tables(
        storage.read_table(*layout.file_parts(spec, fit_id, p, layout.ASSIGNMENTS), columns=[measures.ID, "cluster_id"])
        .replace_schema_metadata(None) for p in files)


def blocked(spec: ClusterDefinition, results: list[dg.AssetCheckResult]) -> bool:
    return spec.checks.blocking and any(not r.passed for r in results)


def evaluate(storage, spec: ClusterDefinition, fit_id: str, previous_fit_id: str | None) -> list[dg.AssetCheckResult]:
    """The three results for a fit: its assignments, and the previous complete fit's for drift."""
    return list(_evaluate(storage, spec, fit_id, previous_fit_id))


def _evaluate(storage, spec: ClusterDefinition, fit_id: str, previous_fit_id: str | None) -> Iterator[dg.AssetCheckResult]:
    config = spec.checks
    key = checked_key(spec)
    severity = severity_of(spec)
    current = fit_assignments(storage, spec, fit_id)
    if current is None:
        for name in CHECK_NAMES:
            yield dg.AssetCheckResult(check_name=name, asset_key=key, passed=False, severity=severity,
                                      description=f"no file is assigned in fit {fit_id}: materialize "
                                                  f"{spec.cluster_name}/assignments first")
        return

    previous = fit_assignments(storage, spec, previous_fit_id) if previous_fit_id else None
    if previous is not None:
        d = measures.drift(previous, current)
        passed = d.changed_share <= config.max_changed_share
        yield dg.AssetCheckResult(
            check_name="drift", asset_key=key, passed=passed, severity=severity,
            description=(f"{d.changed_share:.1%} of {d.compared} documents changed cluster "
                         f"(limit {config.max_changed_share:.0%}); ARI {d.ari:.3f}"),
            metadata={
                "changed_share": dg.MetadataValue.float(round(d.changed_share, 4)),
                "changed_documents": dg.MetadataValue.int(d.changed),
                "compared_documents": dg.MetadataValue.int(d.compared),
                "adjusted_rand_index": dg.MetadataValue.float(round(d.ari, 4)),
                "max_changed_share": dg.MetadataValue.float(config.max_changed_share),
                "previous_fit_id": dg.MetadataValue.text(previous_fit_id),
            },
        )
    else:
        yield dg.AssetCheckResult(check_name="drift", asset_key=key, passed=True, severity=severity,
                                  description="first fit: no previous assignments to compare with")

    sizes = measures.cluster_sizes(current)
    yield dg.AssetCheckResult(
        check_name="noise_share", asset_key=key, passed=sizes.noise_share <= config.max_noise_share,
        severity=severity,
        description=f"{sizes.noise_share:.1%} of {sizes.documents} documents are noise "
                    f"(limit {config.max_noise_share:.0%})",
        metadata={
            "noise_share": dg.MetadataValue.float(round(sizes.noise_share, 4)),
            "noise_documents": dg.MetadataValue.int(sizes.noise),
            "max_noise_share": dg.MetadataValue.float(config.max_noise_share),
        },
    )

    empty = sizes.empty_clusters(config.min_cluster_size)
    problems = []
    if not sizes.sizes:
        problems.append("no cluster at all: every document is noise")
    if empty:
        problems.append(f"{len(empty)} clusters with fewer than {config.min_cluster_size} documents: "
                        f"{', '.join(map(str, empty[:20]))}")
    if sizes.largest_share > config.max_cluster_share:
        largest = max(sizes.sizes, key=sizes.sizes.get)
        problems.append(f"cluster {largest} holds {sizes.largest_share:.1%} of the documents "
                        f"(limit {config.max_cluster_share:.0%})")
    yield dg.AssetCheckResult(
        check_name="cluster_sizes", asset_key=key, passed=not problems, severity=severity,
        description="; ".join(problems) or f"{len(sizes.sizes)} clusters, largest {sizes.largest_share:.1%}",
        metadata={
            "num_clusters": dg.MetadataValue.int(len(sizes.sizes)),
            "largest_share": dg.MetadataValue.float(round(sizes.largest_share, 4)),
            "smallest_cluster": dg.MetadataValue.int(min(sizes.sizes.values(), default=0)),
            "empty_clusters": dg.MetadataValue.json(empty[:100]),
        },
    )
