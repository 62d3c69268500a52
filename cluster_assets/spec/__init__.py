"""Cluster definitions: the reference API's JSON body (or the same in YAML), parsed and validated.

Field names are the reference's, so its JSON definitions load verbatim. Every
problem is reported as ``<file>: <field>: <message>``. One module per part of a
definition: ``labeling`` (llm_labeling), ``automation`` (triggers, webhooks,
checks), ``definition`` (the whole), ``loading`` (files and errors).
"""

from cluster_assets.spec.automation import Checks, CronTrigger, EventTrigger, IntervalTrigger, Trigger, Webhook
from cluster_assets.spec.base import (
    DEFINITION_SUFFIXES, MEDIA_INPUT_KEYS, SAFE_ID, STANDARD_ENRICHMENT_FIELDS, check_safe_id,
)
from cluster_assets.spec.definition import (
    ClusterDefinition, DimensionReduction, Enrichment, HierarchyOptions, TaxonomyClassification,
)
from cluster_assets.spec.labeling import InputMapping, LabelingInputs, LLMLabeling
from cluster_assets.spec.loading import (
    DefinitionError, LoadedDefinition, definition_files, definition_problems, load_definition_file,
    load_definitions, parse_definition, read_definition_file,
)

__all__ = [
    "Checks", "CronTrigger", "EventTrigger", "IntervalTrigger", "Trigger", "Webhook",
    "DEFINITION_SUFFIXES", "MEDIA_INPUT_KEYS", "SAFE_ID", "STANDARD_ENRICHMENT_FIELDS", "check_safe_id",
    "ClusterDefinition", "DimensionReduction", "Enrichment", "HierarchyOptions", "TaxonomyClassification",
    "InputMapping", "LabelingInputs", "LLMLabeling",
    "DefinitionError", "LoadedDefinition", "definition_files", "definition_problems", "load_definition_file",
    "load_definitions", "parse_definition", "read_definition_file",
]
