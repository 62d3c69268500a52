"""Dagster resources: where collections and artifacts live."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, create_model

from cluster_assets.places import STORAGE_ENV, default_storage_root
from cluster_assets.storage import Storage

class StorageResource(dg.ConfigurableResource):
    """The storage root: a local folder or ``s3://bucket/prefix`` (credentials from the usual AWS variables)."""

    root: str

    def get(self) -> Storage:
        return Storage(self.root)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every asset takes this resource: the place where each run records its host, which
        # `cluster-assets executions` needs to tell a killed run from a live one.
        if context.instance is not None and context.dagster_run is not None:
            from cluster_assets.history import record_run_host

            record_run_host(context.instance, context.dagster_run)


def storage_resource() -> StorageResource:
    if os.environ.get(STORAGE_ENV):
        return StorageResource(root=dg.EnvVar(STORAGE_ENV))
    return StorageResource(root=default_storage_root())


# --- LLM labeling ---------------------------------------------------------------------------------
def _llm_key_variables() -> dict[str, tuple[str, ...]]:
    """Resource field -> the variables holding that provider's key, from the provider registry."""
    from cluster_assets.labeling.providers import PROVIDERS

    return {f"{name}_api_key": cls.key_variables for name, cls in PROVIDERS.items() if cls.key_variables}


LLM_KEY_VARIABLES = _llm_key_variables()


class _LLMKeys(dg.ConfigurableResource):
    def api_keys(self) -> dict[str, str | None]:
        return {field[: -len("_api_key")]: getattr(self, field) for field in LLM_KEY_VARIABLES}

    def labeler(self, spec, storage):
        """The labeler for one definition: LLM when keyed, else data labels with the reason."""
        from cluster_assets.labeling import choose_labeler

        return choose_labeler(spec, self.api_keys(), storage=storage)


# One optional key field per provider of the registry (``<provider>_api_key``); repr=False: a resolved
# resource's repr must never show a key.
LLMResource = create_model(
    "LLMResource", __base__=_LLMKeys, __module__=__name__,
    __doc__="The LLM providers' API keys (``dg.EnvVar``s; an unset one stays None and its definitions fall "
            "back to data labels). ``s3://`` media URLs are presigned with boto3's default credentials.",
    **{field: (str | None, Field(default=None, repr=False)) for field in LLM_KEY_VARIABLES},
)


def llm_resource() -> LLMResource:
    """Keys through ``dg.EnvVar`` for the variables that are set (an EnvVar of an unset variable fails at init)."""
    fields = {}
    for field_name, variables in LLM_KEY_VARIABLES.items():
        present = next((v for v in variables if os.environ.get(v)), None)
        if present:
            fields[field_name] = dg.EnvVar(present)
    return LLMResource(**fields)



# --- the engine of the per-file work ---------------------------------------------------------------
RAY_ADDRESS_ENV = "CLUSTER_ASSETS_RAY_ADDRESS"
RAY_NUM_CPUS_ENV = "CLUSTER_ASSETS_RAY_NUM_CPUS"


class EngineResource(dg.ConfigurableResource):
    """Where the per-file stages run each file: in this process (no ``ray_address``), on a local Ray
    started for the run (``local``), or on a Ray cluster that already runs (``auto``, ``ray://host:10001``).
    The deployment's choice, never the definition's: the same fit gives the same assignments on each."""

    ray_address: str | None = None
    ray_num_cpus: int | None = None  # CPUs of a ``local`` Ray (default: every core)
    max_in_flight: int | None = None  # Ray tasks pending at once (default: twice the cluster's CPUs)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Connect when the run starts, so an unreachable cluster fails the run before any stage writes.
        if self.ray_address:
            from cluster_assets.engines.ray_engine import connect

            connect(self.ray_address, self.ray_num_cpus)

    def get(self):
        """A fresh engine for one step (it counts the step's Ray tasks)."""
        from cluster_assets.stages.engine import InProcessEngine

        if not self.ray_address:
            return InProcessEngine()
        from cluster_assets.engines.ray_engine import RayEngine, connect

        connect(self.ray_address, self.ray_num_cpus)
        return RayEngine(self.max_in_flight)


def engine_resource() -> EngineResource:
    """In-process unless ``CLUSTER_ASSETS_RAY_ADDRESS`` is set (read through ``dg.EnvVar`` when the run starts)."""
    fields = {}
    if os.environ.get(RAY_ADDRESS_ENV):
        fields["ray_address"] = dg.EnvVar(RAY_ADDRESS_ENV)
    if os.environ.get(RAY_NUM_CPUS_ENV):
        fields["ray_num_cpus"] = dg.EnvVar.int(RAY_NUM_CPUS_ENV)
    return EngineResource(**fields)
