"""``triggers``, ``webhooks`` and ``checks``: what runs a definition and what watches its runs."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from cluster_assets.spec.base import _Strict


class _TriggerBase(_Strict):
    name: str | None = None
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_]+", value):
            raise ValueError(f"trigger name {value!r} may use only letters, digits and '_'")
        return value


class CronTrigger(_TriggerBase):
    type: Literal["cron"]
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        import dagster as dg

        # Dagster's public check of a cron string is the schedule's own (its validator is private).
        try:
            dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError(f"{value!r} is not a valid cron string (five fields: minute hour day month weekday)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as 'Europe/Paris')") from None
        return value


class IntervalTrigger(_TriggerBase):
    type: Literal["interval"]
    seconds: float | None = Field(None, gt=0)
    minutes: float | None = Field(None, gt=0)
    hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_interval(self) -> "IntervalTrigger":
        if not (self.seconds or self.minutes or self.hours):
            raise ValueError("an interval trigger needs a positive 'seconds', 'minutes' or 'hours'")
        if self.total_seconds < 1:
            raise ValueError("an interval trigger runs at most once a second: the interval adds up to less than 1 s")
        return self

    @property
    def total_seconds(self) -> int:
        return int(round((self.seconds or 0) + 60 * (self.minutes or 0) + 3600 * (self.hours or 0)))


class EventTrigger(_TriggerBase):
    type: Literal["event"]
    min_new_documents: int = Field(1, ge=1)
    event: str | None = None  # the reference's event name, kept for display


Trigger = Annotated[Union[CronTrigger, IntervalTrigger, EventTrigger], Field(discriminator="type")]


class Webhook(_Strict):
    url: str
    # a canceled run is delivered only to webhooks that list "canceled"
    events: list[Literal["success", "failure", "canceled"]] = Field(default_factory=lambda: ["success", "failure"])
    secret_env: str | None = None  # name of the environment variable holding the HMAC secret
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_retries: int = Field(2, ge=0, le=5)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("secret_env is the NAME of an environment variable holding the secret, not the secret")
        return value


class Checks(_Strict):
    """Thresholds of the asset checks on each fit (declared on ``<cluster>/labels``); a failing check warns
    unless ``blocking``. The ``new_files_*`` thresholds are the event sensor's drift check on files assigned
    since the fit: beyond either, the sensor requests a refit."""

    enabled: bool = True
    # drift: share of documents (present in both runs) that changed cluster, after matching cluster ids
    max_changed_share: float = Field(0.3, ge=0.0, le=1.0)
    max_noise_share: float = Field(0.5, ge=0.0, le=1.0)
    # giant cluster: one cluster holds more than this share of the documents
    max_cluster_share: float = Field(0.8, gt=0.0, le=1.0)
    # empty cluster: fewer documents than this (cluster ids are 0..k-1, so a missing id is an empty cluster)
    min_cluster_size: int = Field(1, ge=1)
    blocking: bool = False
    # new files' mean cosine to their centroid may fall this far below the fit's own before a refit
    new_files_max_cohesion_drop: float = Field(0.1, ge=0.0, le=2.0)
    # and their noise share may rise this far above the fit's own
    new_files_max_noise_increase: float = Field(0.1, ge=0.0, le=1.0)
    # the drift check waits for at least this many new documents
    new_files_min_documents: int = Field(100, ge=1)
