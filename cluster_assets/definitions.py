"""The Dagster code location: every cluster definition in the definitions folder, as assets."""

from cluster_assets.loader import build_defs

defs = build_defs()
