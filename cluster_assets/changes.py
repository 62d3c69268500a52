"""What changed in a definition's source collections since its last assignments.

Plain functions over the storage layer (no Dagster): the event sensor calls them
to decide whether enough documents arrived to start a run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.storage import Storage

ID = "document_id"


def collections_digest(storage: Storage, spec: ClusterDefinition) -> str:
    """A short digest of every source collection's file names, sizes and mtimes.

    Cheap (a directory listing); raises ``CollectionError`` when a collection is missing.
    """
    fingerprints = {cid: storage.collection_fingerprint(cid) for cid in spec.source_collection_ids}
    return hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DocumentChanges:
    documents: int  # documents in the source collections now
    new: int  # ids not in the last assignments
    removed: int  # ids in the last assignments that are gone
    assigned: int  # documents in the last assignments (0 when the definition never ran)

    @property
    def changed(self) -> int:
        return self.new + self.removed


def _source_ids(storage: Storage, spec: ClusterDefinition) -> pa.Array:
    arrays = []
    for cid in spec.source_collection_ids:
        ids = storage.collection_dataset(cid).to_table(columns=[ID]).column(ID)
        arrays.extend(c.cast(pa.string()) for c in ids.chunks)
    return pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())


def assigned_ids(storage: Storage, spec: ClusterDefinition) -> pa.Array:
    parts = layout.asset_parts(spec, layout.ASSIGNMENTS)
    if not storage.exists(*parts):
        return pa.array([], pa.string())
    return storage.read_table(*parts, columns=[ID]).column(ID).combine_chunks().cast(pa.string())


def document_changes(storage: Storage, spec: ClusterDefinition) -> DocumentChanges:
    """Compare the source collections' document ids with the ids of the last assignments.

    A document rewritten in place under the same id is not counted: ids are what
    tell a new document from a known one.
    """
    now = _source_ids(storage, spec)
    before = assigned_ids(storage, spec)
    return DocumentChanges(documents=len(now), new=_count_missing(now, before),
                           removed=_count_missing(before, now), assigned=len(before))


def _count_missing(values: pa.Array, reference: pa.Array) -> int:
    """How many of ``values`` are not in ``reference``."""
    if len(values) == 0:
        return 0
    if len(reference) == 0:
        return len(values)
    return len(values) - int(pc.sum(pc.is_in(values, value_set=reference)).as_py() or 0)
