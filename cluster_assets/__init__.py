"""cluster_assets: cluster document collections by their embeddings, as Dagster assets."""

__version__ = "0.1.0"
