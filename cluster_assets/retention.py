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

import json
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache

import pyarrow.compute as pc
import pyarrow.fs as pafs

from cluster_assets import taxonomy
from cluster_assets.spec.definition import Retention
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


def _written(storage: Storage, parts: tuple[str, ...]) -> float:
    infos = storage.fs.get_file_info(pafs.FileSelector(storage.path(*parts), recursive=True, allow_not_found=True))
    times = [i.mtime.timestamp() for i in infos if i.type == pafs.FileType.File and i.mtime is not None]
    return max(times, default=0.0)


def _entries(storage: Storage, cluster_name: str, kind: str, *base: str) -> list[Entry]:
    return [Entry(kind, name, (*base, name), _written(storage, (*base, name)))
            for name in storage.list_dir(*base) if not name.startswith(("_", "."))]


def _sample_of(storage: Storage, cluster_name: str, fit_id: str) -> str | None:
    parts = ("assets", cluster_name, "fits", fit_id, layout.FIT)
    try:
        return json.loads(storage.read_bytes(*parts)).get("sample_id")
    except (FileNotFoundError, ValueError):
        return None


def taxonomy_runs(storage: Storage, cluster_name: str) -> dict[str, str]:
    """Run id -> the taxonomy that holds nodes promoted from that run of ``cluster_name``."""
    runs: dict[str, str] = {}
    for name in taxonomy.list_taxonomies(storage):
        nodes = storage.read_table(*taxonomy.taxonomy_parts(name, taxonomy.NODES),
                                   columns=["source_cluster", "source_run_id"])
        mine = nodes.filter(pc.equal(nodes.column("source_cluster"), cluster_name))
        for run_id in set(mine.column("source_run_id").to_pylist()):
            runs.setdefault(run_id, name)
        for promotion in (taxonomy.read_manifest(storage, name) or {}).get("promotions", []):
            if promotion.get("cluster") == cluster_name and promotion.get("run_id"):
                runs.setdefault(promotion["run_id"], name)
    return runs


def plan(storage: Storage, cluster_name: str, policy: Retention, in_progress: Collection[str] = (),
         now: float | None = None) -> Plan:
    """What pruning ``cluster_name`` would delete and what it keeps (with the reason)."""
    now = time.time() if now is None else now
    base = ("assets", cluster_name)
    fits = _entries(storage, cluster_name, "fit", *base, "fits")
    samples = _entries(storage, cluster_name, "sample", *base, "samples")
    runs = _entries(storage, cluster_name, "artifacts", "artifacts", cluster_name)

    keep: dict[tuple[str, str], str] = {}  # (kind, id) -> why
    sample_of = cache(lambda fit_id: _sample_of(storage, cluster_name, fit_id))  # one fit.json read a fit

    def hold(kinds: tuple[str, ...], run_id: str | None, why: str) -> None:
        for kind in kinds:
            if run_id:
                keep.setdefault((kind, run_id), why)
        if run_id and "fit" in kinds:
            keep.setdefault(("sample", sample_of(run_id) or ""), why)

    current_parts = (*base, layout.CURRENT)
    if storage.exists(*current_parts):
        current = json.loads(storage.read_bytes(*current_parts))
        hold(("fit", "artifacts"), current.get("fit_id"), "current fit")
        keep.setdefault(("sample", current.get("sample_id") or ""), "current fit")
        hold(("fit", "artifacts"), current.get("previous_fit_id"), "previous fit (the drift check compares with it)")
    for run_id, name in taxonomy_runs(storage, cluster_name).items():
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

    out = Plan(cluster_name)
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
