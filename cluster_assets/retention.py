"""What ``cluster-assets prune`` may delete: old samples, fits and run artifacts of a definition.

Kept, whatever their age:
- the current fit and the one before it (``current.json``: the drift check compares with it), their samples
  and the artifacts of the runs that made them;
- the newest ``retention.keep_fits`` fits, their samples and artifacts;
- anything written in the last ``retention.keep_days`` days;
- the fit, sample and artifacts of every run a promoted taxonomy's nodes came from;
- the outputs of runs still in progress (the caller names them: the Dagster instance knows).
Everything else under ``assets/<cluster>/samples/``, ``assets/<cluster>/fits/`` and
``artifacts/<cluster>/`` goes, a folder at a time. No Dagster here: the command supplies the runs in progress.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache

from cluster_assets import taxonomy
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.storage import Storage

DAY_S = 86_400


@dataclass(frozen=True)
class Entry:
    kind: str  # sample | fit | artifacts
    id: str  # the sample, fit or run id (a Dagster run id)
    parts: tuple[str, ...]
    written: float  # newest modification time under the folder (epoch seconds)
    why_kept: str = ""  # empty: pruned


@dataclass
class Plan:
    cluster_name: str
    entries: list[Entry] = field(default_factory=list)

    @property
    def doomed(self) -> list[Entry]:
        return [e for e in self.entries if not e.why_kept]

    @property
    def kept(self) -> list[Entry]:
        return [e for e in self.entries if e.why_kept]


def _entries(storage: Storage, kind: str, base: tuple[str, ...]) -> list[Entry]:
    return [Entry(kind, folder.name, (*base, folder.name), folder.newest) for folder in storage.child_folders(*base)]


def _fit_sample(storage: Storage, spec: ClusterDefinition, fit_id: str) -> str | None:
    try:
        return layout.read_fit_record(storage, spec, fit_id).get("sample_id")
    except ValueError:  # a fit.json cut short: its fit is pruned like any other
        return None


def promoted_runs(storage: Storage) -> dict[str, dict[str, str]]:
    """Cluster name -> run id -> the taxonomy that holds nodes promoted from that run: every taxonomy read once."""
    runs: dict[str, dict[str, str]] = {}
    for name in taxonomy.list_taxonomies(storage):
        nodes = storage.read_table(*taxonomy.taxonomy_parts(name, taxonomy.NODES),
                                   columns=["source_cluster", "source_run_id"])
        sources = zip(nodes.column("source_cluster").to_pylist(), nodes.column("source_run_id").to_pylist())
        for cluster, run_id in sources:
            runs.setdefault(cluster, {}).setdefault(run_id, name)
        for promotion in (taxonomy.read_manifest(storage, name) or {}).get("promotions", []):
            if promotion.get("cluster") and promotion.get("run_id"):
                runs.setdefault(promotion["cluster"], {}).setdefault(promotion["run_id"], name)
    return runs


def plan(storage: Storage, spec: ClusterDefinition, in_progress: Collection[str] = (),
         promoted: dict[str, str] | None = None, now: float | None = None) -> Plan:
    """What pruning ``spec``'s outputs under its ``retention`` would delete and what it keeps (with the reason).
    ``promoted``: run id -> taxonomy, ``promoted_runs(storage)[spec.cluster_name]`` (read here if not given)."""
    now = time.time() if now is None else now
    policy = spec.retention
    if promoted is None:
        promoted = promoted_runs(storage).get(spec.cluster_name, {})
    fits = _entries(storage, "fit", layout.cluster_parts(spec, "fits"))
    samples = _entries(storage, "sample", layout.cluster_parts(spec, "samples"))
    runs = _entries(storage, "artifacts", layout.artifacts_parts(spec))

    keep: dict[tuple[str, str], str] = {}  # (kind, id) -> why
    sample_of = cache(lambda fit_id: _fit_sample(storage, spec, fit_id))  # one fit.json read a fit

    def hold(kinds: tuple[str, ...], run_id: str | None, why: str) -> None:
        for kind in kinds:
            if run_id:
                keep.setdefault((kind, run_id), why)
        if run_id and "fit" in kinds:
            keep.setdefault(("sample", sample_of(run_id) or ""), why)

    current = layout.read_current(storage, spec)
    if current is not None:
        hold(("fit", "artifacts"), current.fit_id, "current fit")
        keep.setdefault(("sample", current.sample_id or ""), "current fit")
        hold(("fit", "artifacts"), current.previous_fit_id, "previous fit (the drift check compares with it)")
    for run_id, name in promoted.items():
        hold(("fit", "artifacts"), run_id, f"promoted to taxonomy {name}")
    stored = {entry.id for entry in fits + samples + runs}
    for run_id in set(in_progress) & stored:  # the instance's runs of other definitions have nothing here
        hold(("fit", "sample", "artifacts"), run_id, "run in progress")
    for rank, fit in enumerate(sorted(fits, key=lambda e: e.written, reverse=True)):
        if rank < policy.keep_fits:
            hold(("fit", "artifacts"), fit.id, f"among the newest {policy.keep_fits} fits")
    young = now - policy.keep_days * DAY_S
    for entry in fits + samples + runs:
        if entry.written >= young:
            keep.setdefault((entry.kind, entry.id), f"younger than {policy.keep_days:g} days")
    # a kept fit keeps its sample (fits held above for their rank or age included)
    for fit in fits:
        if ("fit", fit.id) in keep:
            keep.setdefault(("sample", sample_of(fit.id) or ""), f"sample of kept fit {fit.id}")

    out = Plan(spec.cluster_name)
    for entry in fits + samples + runs:
        out.entries.append(Entry(entry.kind, entry.id, entry.parts, entry.written, keep.get((entry.kind, entry.id), "")))
    return out


def prune(storage: Storage, doomed: list[Entry]) -> None:
    """Delete the folders of ``doomed`` (a plan's); fits first, so no fit outlives its sample."""
    order = {"fit": 0, "artifacts": 1, "sample": 2}
    for entry in sorted(doomed, key=lambda e: order[e.kind]):
        try:
            storage.fs.delete_dir(storage.path(*entry.parts))
        except FileNotFoundError:
            pass
