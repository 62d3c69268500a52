"""Engines other than the in-process default (``cluster_assets.stages.engine``), each in its own module."""
