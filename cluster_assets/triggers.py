"""A definition's ``triggers`` -> Dagster schedules and sensors over its asset group.

- ``cron``: a ``ScheduleDefinition`` with the trigger's ``execution_timezone``.
- ``interval``: a schedule when the interval divides the clock evenly (``*/15 * * * *``,
  ``0 */6 * * *``, daily, weekly), because a schedule's ticks sit on the clock and survive
  daemon restarts; otherwise (45 s, 7 min, 90 min, ...) a sensor evaluated every
  ``minimum_interval_seconds`` that requests one run per elapsed interval.
- ``event``: a sensor that watches the source collections, incrementally. Each tick lists
  the collections' files (never their document ids). Once the new or gone files hold at
  least ``min_new_documents`` documents (counted from Parquet footers and the fit's
  per-file counts), it registers the new files as partitions and requests one run of
  their per-file stages (assignments, reduced_coords, enriched_collection) with the
  current fit: no refit, no rewrite of the files already done. Gone files lose their
  partition and their enriched file. It requests a full run (a refit) instead when
  there is no complete fit yet, a field the fit follows changed since the fit (``spec.versions.fit_version``:
  not the description, triggers, webhooks, labeling or checks),
  or the files assigned since the fit drifted from it (``changes.new_files_drift``: their
  cohesion or noise share against the fit's own, thresholds in ``checks``).
  Run keys name the fit and the files, so a retried tick never starts a second run.
  A collection that cannot be read logs the error and skips the tick.

Schedules and interval sensors request full runs: they register the files as
partitions and cover every one in one run (a partition range).

Every target is ``AssetSelection.groups(group_name)``: no hand-written job per definition
(Dagster derives one anonymous job per schedule/sensor from the selection). ``enabled``
maps to ``default_status`` RUNNING/STOPPED. Runs carry ``cluster_assets/*`` tags naming
the definition and the trigger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import dagster as dg

from cluster_assets import partitions
from cluster_assets.changes import file_changes, snapshot
from cluster_assets.runs import incremental_keys, stage_keys
from cluster_assets.spec import ClusterDefinition, CronTrigger, EventTrigger, IntervalTrigger
from cluster_assets.storage import CollectionError

TAG_CLUSTER = "cluster_assets/cluster"  # the group name (also the factory's op tag)
TAG_DEFINITION = "cluster_assets/definition"  # the cluster_name as written in the definition
TAG_TRIGGER = "cluster_assets/trigger"  # the trigger's name inside its definition
TAG_TRIGGER_TYPE = "cluster_assets/trigger_type"
TAG_NEW_DOCUMENTS = "cluster_assets/new_documents"
TAG_REFIT_REASON = "cluster_assets/refit_reason"

EVENT_SENSOR_INTERVAL_S = 30

# The clock the interval sensors read; a test may replace it.
clock: Callable[[], float] = time.time


def trigger_name(trigger, index: int) -> str:
    """The trigger's own name, else ``<type>_<position>`` (e.g. ``cron_0``)."""
    return trigger.name or f"{trigger.type}_{index}"


def dagster_name(spec: ClusterDefinition, trigger, index: int) -> str:
    """Schedule/sensor names are global to the code location: ``<group>__<trigger name>``."""
    return f"{spec.group_name}__{trigger_name(trigger, index)}"


def run_tags(spec: ClusterDefinition, trigger, index: int) -> dict[str, str]:
    return {
        TAG_CLUSTER: spec.group_name,
        TAG_DEFINITION: spec.cluster_name,
        TAG_TRIGGER: trigger_name(trigger, index),
        TAG_TRIGGER_TYPE: trigger.type,
    }


def interval_cron(seconds: int) -> str | None:
    """The cron string that fires every ``seconds``, when the interval divides the clock evenly."""
    if seconds % 60:
        return None
    minutes = seconds // 60
    if minutes < 60:
        return "* * * * *" if minutes == 1 else (f"*/{minutes} * * * *" if 60 % minutes == 0 else None)
    if minutes % 60:
        return None
    hours = minutes // 60
    if hours < 24:
        return "0 * * * *" if hours == 1 else (f"0 */{hours} * * *" if 24 % hours == 0 else None)
    if hours == 24:
        return "0 0 * * *"
    if hours == 24 * 7:
        return "0 0 * * 0"
    return None


def build_triggers(spec: ClusterDefinition) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    schedules: list[dg.ScheduleDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    for index, trigger in enumerate(spec.triggers):
        if isinstance(trigger, CronTrigger):
            schedules.append(_schedule(spec, trigger, index, trigger.cron, trigger.timezone))
        elif isinstance(trigger, IntervalTrigger):
            cron = interval_cron(trigger.total_seconds)
            if cron:
                schedules.append(_schedule(spec, trigger, index, cron, "UTC"))
            else:
                sensors.append(_interval_sensor(spec, trigger, index))
        elif isinstance(trigger, EventTrigger):
            sensors.append(_event_sensor(spec, trigger, index))
    return schedules, sensors


def _describe(spec: ClusterDefinition, trigger, index: int, what: str) -> str:
    return f"Trigger {trigger_name(trigger, index)!r} of cluster definition {spec.cluster_name!r}: {what}."


def _schedule(spec: ClusterDefinition, trigger, index: int, cron: str, timezone: str) -> dg.ScheduleDefinition:
    name = dagster_name(spec, trigger, index)
    tags = run_tags(spec, trigger, index)

    def execution_fn(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        when = context.scheduled_execution_time
        stamp = when.isoformat() if when else "manual"
        # The scheduler already keeps one run per tick; the key makes that explicit and visible.
        return full_run_request(context.instance, context.resources.storage.get(), spec, f"{name}:{stamp}", tags)

    what = f"cron {cron!r} in {timezone}" if isinstance(trigger, CronTrigger) else f"every {trigger.total_seconds} s ({cron!r})"
    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        execution_timezone=timezone,
        execution_fn=execution_fn,
        target=dg.AssetSelection.groups(spec.group_name),
        default_status=dg.DefaultScheduleStatus.RUNNING if trigger.enabled else dg.DefaultScheduleStatus.STOPPED,
        description=_describe(spec, trigger, index, what),
        tags=tags,
        metadata={"definition": spec.cluster_name, "trigger": trigger_name(trigger, index)},
        required_resource_keys={"storage"},
    )


def _interval_sensor(spec: ClusterDefinition, trigger: IntervalTrigger, index: int) -> dg.SensorDefinition:
    """An interval the clock cannot express as cron: one run per elapsed interval."""
    name = dagster_name(spec, trigger, index)
    tags = run_tags(spec, trigger, index)
    every = trigger.total_seconds

    @dg.sensor(
        name=name,
        target=dg.AssetSelection.groups(spec.group_name),
        minimum_interval_seconds=every,
        default_status=dg.DefaultSensorStatus.RUNNING if trigger.enabled else dg.DefaultSensorStatus.STOPPED,
        description=_describe(spec, trigger, index, f"every {every} s"),
        tags=tags,
        required_resource_keys={"storage"},
    )
    def interval_sensor(context: dg.SensorEvaluationContext):
        slot = int(clock() // every)
        if context.cursor == str(slot):
            return dg.SkipReason(f"a run was already requested for interval #{slot}")
        request = full_run_request(context.instance, context.resources.storage.get(), spec, f"{name}:{slot}", tags)
        return dg.SensorResult(run_requests=[request], cursor=str(slot))

    return interval_sensor


def _event_sensor(spec: ClusterDefinition, trigger: EventTrigger, index: int) -> dg.SensorDefinition:
    name = dagster_name(spec, trigger, index)
    tags = run_tags(spec, trigger, index)
    collections = ", ".join(spec.source_collection_ids)

    @dg.sensor(
        name=name,
        target=dg.AssetSelection.groups(spec.group_name),
        minimum_interval_seconds=EVENT_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING if trigger.enabled else dg.DefaultSensorStatus.STOPPED,
        description=_describe(spec, trigger, index,
                              f"assigns new files of {collections} with the current fit once they hold at "
                              f"least {trigger.min_new_documents} new or gone documents"),
        tags=tags,
        required_resource_keys={"storage"},
    )
    def event_sensor(context: dg.SensorEvaluationContext):
        return evaluate_event(context, context.resources.storage.get(), spec, trigger, name, tags)

    return event_sensor


def full_run_request(instance: dg.DagsterInstance, storage, spec: ClusterDefinition, run_key: str,
                     tags: dict[str, str]) -> dg.RunRequest:
    """One run over every source file (registered as partitions first): a refit."""
    keys, _, _ = partitions.sync_partitions(instance, storage, spec)
    return dg.RunRequest(run_key=run_key, asset_selection=stage_keys(spec),
                         tags={**tags, **partitions.range_tags(keys)})


def evaluate_event(context: dg.SensorEvaluationContext, storage, spec: ClusterDefinition, trigger: EventTrigger,
                   name: str, tags: dict[str, str]):
    try:
        seen = snapshot(context.instance, storage, spec)
        # the cursor holds the snapshot of the last tick that found nothing to do: if nothing listed has
        # changed since, skip without opening a file (10,000 assignments footers are 10,000 reads on S3)
        if context.cursor == seen.digest:
            return dg.SkipReason(f"nothing changed in {', '.join(spec.source_collection_ids)} since the last tick")
        changes = file_changes(seen, storage, spec)
    except (CollectionError, OSError, ValueError) as exc:
        context.log.error(f"{name}: cannot read the source collections of {spec.cluster_name!r}: {exc}")
        return dg.SkipReason(f"source collection unreadable: {exc}")
    if not (changes.refit_reason or changes.new_files or changes.gone_files or changes.redo):
        return dg.SensorResult(skip_reason=f"no new, rewritten or gone files in "
                                           f"{', '.join(spec.source_collection_ids)}", cursor=seen.digest)
    if changes.changed < trigger.min_new_documents:
        return dg.SensorResult(skip_reason=f"{changes.changed} new or removed documents, fewer than "
                                           f"min_new_documents={trigger.min_new_documents}", cursor=seen.digest)
    add = [dg.AddDynamicPartitionsRequest(partitions.partitions_name(spec), changes.new_files)] \
        if changes.new_files else []
    counted = {**tags, TAG_NEW_DOCUMENTS: str(changes.changed)}
    if changes.refit_reason:
        # No complete fit, or one made from another version of the definition: a full run refits.
        context.log.info(f"{name}: {changes.refit_reason}: requesting a full run")
        keys = [k for k in changes.known if k in changes.files] + changes.new_files
        request = dg.RunRequest(run_key=f"{name}:refit:{seen.fit_version}:{changes.fit_id}:{changes.listing_digest}",
                                asset_selection=stage_keys(spec),
                                tags={**counted, **partitions.range_tags(keys), TAG_REFIT_REASON: changes.refit_reason})
        return dg.SensorResult(run_requests=[request], dynamic_partitions_requests=add + _forget(
            storage, spec, changes.gone_files))
    requests = []
    if changes.new_files:  # appended last, so one range covers them all
        requests.append(dg.RunRequest(
            run_key=f"{name}:{changes.fit_id}:{changes.digest}", asset_selection=incremental_keys(spec),
            tags={**counted, **partitions.range_tags(changes.new_files)}))
    # files added while the current fit was being made, or rewritten since: one run each
    requests.extend(dg.RunRequest(run_key=f"{name}:{changes.fit_id}:{key}:{changes.files[key]['mtime_ns']}",
                                  asset_selection=incremental_keys(spec),
                                  tags={**counted, **partitions.range_tags([key])})
                    for key in changes.redo)
    context.log.info(f"{name}: {len(changes.new_files)} new, {len(changes.redo)} rewritten or unassigned and "
                     f"{len(changes.gone_files)} gone files ({changes.changed} documents): assigning with fit "
                     f"{changes.fit_id}")
    return dg.SensorResult(run_requests=requests,
                           dynamic_partitions_requests=add + _forget(storage, spec, changes.gone_files))


def _forget(storage, spec: ClusterDefinition, gone: list[str]) -> list[dg.DeleteDynamicPartitionsRequest]:
    """Gone files lose their enriched file now and their partition with this tick."""
    if not gone:
        return []
    from cluster_assets.stages.enrich import remove_outputs

    remove_outputs(storage, spec, gone)
    return [dg.DeleteDynamicPartitionsRequest(partitions.partitions_name(spec), gone)]
