"""Who may write a collection: the owner manifest beside an enriched collection's files.

A definition writes an enrichment target only if the target does not exist yet
or its manifest names that definition. The manifest,
``collections/<target>/_cluster_assets_owner.json`` (a leading ``_``, so Parquet
readers skip it), holds the owning ``cluster_name`` and the files it wrote: a
rewrite replaces those files and never touches any other.

No Dagster here: the enrichment stage calls ``check_target`` then ``claim``; the
Dagster layer only supplies the targets the definition's last materialization wrote
(the upgrade path for collections written before manifests existed).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from cluster_assets.storage import STAGING_PREFIX, Storage

OWNER_FILE = "_cluster_assets_owner.json"
# What the writer before owner manifests left in a target: one file.
LEGACY_FILES = ("part-0.parquet",)


class OwnershipError(ValueError):
    """A definition may not write a collection; the message names the definition and the collection."""


@dataclass(frozen=True)
class Owner:
    cluster_name: str
    files: tuple[str, ...] = ()
    fit_id: str | None = None  # the fit whose enriched files the collection holds


def _manifest_parts(storage: Storage, collection_id: str) -> tuple[str, ...]:
    return (*storage.collection_parts(collection_id), OWNER_FILE)


def read_owner(storage: Storage, collection_id: str) -> Owner | None:
    """The collection's owner, or None when it has no manifest."""
    parts = _manifest_parts(storage, collection_id)
    try:
        data = json.loads(storage.read_bytes(*parts))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise OwnershipError(f"collection {collection_id!r}: owner manifest {storage.uri(*parts)} "
                             f"is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cluster_name"), str):
        raise OwnershipError(f"collection {collection_id!r}: owner manifest {storage.uri(*parts)} "
                             "has no cluster_name")
    files = data.get("files") if isinstance(data.get("files"), list) else []
    fit_id = data.get("fit_id") if isinstance(data.get("fit_id"), str) else None
    return Owner(data["cluster_name"], tuple(str(f) for f in files), fit_id)


def occupants(storage: Storage, collection_id: str) -> list[str]:
    """What the collection's folder holds besides the manifest and staging leftovers."""
    return [name for name in storage.list_dir(*storage.collection_parts(collection_id))
            if name != OWNER_FILE and not name.startswith(STAGING_PREFIX)]


def target_state(storage: Storage, collection_id: str) -> str | None:
    """None: the collection does not exist; "": it exists with no owner; else its owner's cluster_name."""
    owner = read_owner(storage, collection_id)
    if owner is not None:
        return owner.cluster_name
    return "" if occupants(storage, collection_id) else None


def check_target(storage: Storage, collection_id: str, cluster_name: str,
                 previous_targets: Collection[str] = ()) -> Owner:
    """What ``cluster_name`` already owns in ``collection_id`` (the files a rewrite replaces).

    Raises ``OwnershipError`` unless the collection does not exist yet, its manifest names
    ``cluster_name``, or it has no manifest and is one of ``previous_targets`` (the targets this
    definition's own last enrichment wrote, before owner manifests existed).
    """
    owner = read_owner(storage, collection_id)
    uri = storage.uri(*storage.collection_parts(collection_id))
    if owner is not None:
        if owner.cluster_name == cluster_name:
            return owner
        raise OwnershipError(
            f"definition {cluster_name!r} cannot write enrichment target collection {collection_id!r}: "
            f"it belongs to definition {owner.cluster_name!r} ({uri}); give {cluster_name!r} its own "
            "enrichment.target_collection_id")
    present = occupants(storage, collection_id)
    if not present:
        return Owner(cluster_name)
    if collection_id in previous_targets:
        return Owner(cluster_name, tuple(f for f in LEGACY_FILES if f in present))
    shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
    raise OwnershipError(
        f"definition {cluster_name!r} cannot write enrichment target collection {collection_id!r}: "
        f"it already exists ({uri}: {shown}) and was not written by this definition; choose another "
        "enrichment.target_collection_id, or move the collection away to let the definition create it")


def claim(storage: Storage, collection_id: str, owner: Owner) -> None:
    """Write the manifest (atomically): ``owner`` owns the collection and the files it lists."""
    body = {"cluster_name": owner.cluster_name, "files": sorted(owner.files), "fit_id": owner.fit_id}
    storage.write_bytes(json.dumps(body, indent=2).encode(), *_manifest_parts(storage, collection_id))
