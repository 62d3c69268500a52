"""Benchmarks of cluster_assets (not tests): see bench/README.md."""
