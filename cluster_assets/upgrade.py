"""``cluster-assets upgrade``: bring a storage root written by the release before fits and partitions up to date.

That release kept one latest output per stage, flat under ``assets/<cluster>/`` (``sample.parquet``,
``embeddings.parquet``, ``model.pkl``, ``assignments.parquet``, ...), pickled a bare ``ClusterModel``
and wrote each enriched collection as one ``part-0.parquet`` without an owner manifest.

None of that is read any more: a definition has no current fit until its next full run, which draws a
new sample and fits again (a model pickled by older code is never loaded). So the upgrade only moves the
flat files aside, into ``assets/<cluster>/legacy/``, where they stay until you delete them; nothing is
deleted and the sources are not touched. An enriched collection without a manifest is adopted at the
next full run by the definition whose last ``enriched_collection`` materialization wrote it
(``ownership.check_target``); the upgrade lists those targets. No Dagster here.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from cluster_assets import ownership
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.storage import Storage

LEGACY = "legacy"


@dataclass(frozen=True)
class Move:
    cluster_name: str
    name: str  # the flat file under assets/<cluster>/

    @property
    def source(self) -> tuple[str, ...]:
        return ("assets", self.cluster_name, self.name)

    @property
    def target(self) -> tuple[str, ...]:
        return ("assets", self.cluster_name, LEGACY, self.name)


def flat_outputs(storage: Storage, cluster_name: str) -> list[str]:
    """Files directly under ``assets/<cluster>/`` other than ``current.json``: the previous release's outputs."""
    infos = storage.fs.get_file_info(pafs.FileSelector(storage.path("assets", cluster_name), allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File
                  and posixpath.basename(i.path) != layout.CURRENT
                  and not posixpath.basename(i.path).startswith(("_", ".")))


def plan_moves(storage: Storage) -> list[Move]:
    return [Move(cluster, name) for cluster in storage.list_dir("assets") if not cluster.startswith(("_", "."))
            for name in flat_outputs(storage, cluster)]


def unowned_targets(storage: Storage, specs: list[ClusterDefinition]) -> list[tuple[str, str]]:
    """(definition, target) for every enrichment target that exists without an owner manifest."""
    out = []
    for spec in specs:
        for target in dict.fromkeys(spec.target_collection_ids().values()):
            if ownership.target_state(storage, target) == "":
                out.append((spec.cluster_name, target))
    return out


def apply(storage: Storage, moves: list[Move]) -> None:
    for m in moves:
        storage.move(m.source, m.target)
