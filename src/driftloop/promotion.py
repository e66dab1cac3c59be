"""Promotion, rejection, rollouts and rollback of model versions: the one place that changes a
stage.

Each change is a registry write, then a Prefect event (``driftloop.model.promoted``,
``driftloop.model.rejected`` or ``driftloop.rollout.started``) whose payload is a
:class:`StageChange`, then an annotation in Grafana when one is configured. The train flow, the
retrain flow (through train), the live judge and ``driftloop model promote/rollback/rollout``
all come here, so an event says the same things whoever caused it.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from driftloop.events import (
    MODEL_PROMOTED,
    MODEL_REJECTED,
    ROLLOUT_STARTED,
    Event,
    model_resource,
    send_event,
)
from driftloop.grafana import annotate_if_configured
from driftloop.prefect_api import PrefectAccess
from driftloop.registry import ModelRegistry, ModelVersion, Role
from driftloop.settings import Settings

# What decided: the gate's comparison, a person, a rollback, or live traffic (rollouts).
Trigger = Literal["gate", "manual", "rollback", "live"]
ActorKind = Literal["flow_run", "automation", "cli"]


@dataclass(frozen=True)
class Actor:
    """Who changed the stage: a flow run, a flow run an automation started, or a CLI user."""

    kind: ActorKind
    name: str
    url: str | None = None

    @classmethod
    def cli_user(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # a uid without a name (containers)
            user = "unknown"
        return cls("cli", user)


@dataclass(frozen=True)
class StageChange:
    """The payload of a promotion or rejection event, and the record of what happened."""

    model: str
    version: str
    data_commit: str
    trigger: Trigger
    actor: Actor
    previous_version: str | None
    reasons: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    role: Role | None = None
    """A rollout's challenger: shadow or canary (the version's role on live traffic)."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """What a live decision rested on: the statistic, its bounds and the sample sizes."""

    @property
    def tag(self) -> str:
        return f"{self.model}:{self.version}"

    def payload(self) -> dict[str, Any]:
        """The event payload: every field, and ``reason``, the trigger under the name the
        design's event contract gives it (``gate`` | ``live`` | ``manual`` | ``rollback``)."""
        return {**asdict(self), "reason": self.trigger}


class Promotions:
    """Changes the stage of versions in ``registry`` and says so.

    ``announce`` delivers an event (default: ``POST /api/events`` to the configured Prefect
    server with its API key); it raises :class:`~driftloop.events.EventNotDelivered` when it
    cannot, after the registry write, so the caller decides whether that is fatal.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        announce: Callable[[Event], None] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.announce = announce or self._send

    def promote(
        self,
        version: ModelVersion,
        *,
        trigger: Trigger,
        actor: Actor,
        reasons: list[str],
    ) -> tuple[ModelVersion, StageChange]:
        """Make ``version`` the one production version of its model."""
        previous = self.registry.stages.production_version(version.name)
        promoted = self.registry.promote(version.name, version.version, "; ".join(reasons))
        return promoted, self._changed(MODEL_PROMOTED, promoted, previous, trigger, actor, reasons)

    def reject(
        self, version: ModelVersion, *, trigger: Trigger, actor: Actor, reasons: list[str]
    ) -> StageChange:
        """Record that ``version`` was refused; it stays a candidate."""
        previous = self.registry.stages.production_version(version.name)
        self.registry.reject(version.name, version.version, reasons)
        return self._changed(MODEL_REJECTED, version, previous, trigger, actor, reasons)

    def start_rollout(
        self, version: ModelVersion, role: Role, *, trigger: Trigger, actor: Actor,
        reasons: list[str],
    ) -> tuple[ModelVersion, StageChange]:  # fmt: skip
        """Put ``version`` beside production as a shadow or a canary, to be judged live."""
        previous = self.registry.stages.production_version(version.name)
        started = self.registry.start_rollout(
            version.name, version.version, role, "; ".join(reasons)
        )
        return started, self._changed(
            ROLLOUT_STARTED, started, previous, trigger, actor, reasons, role=role
        )

    def promote_challenger(
        self, version: ModelVersion, *, trigger: Trigger, actor: Actor, reasons: list[str],
        evidence: dict[str, Any] | None = None,
    ) -> tuple[ModelVersion, StageChange]:  # fmt: skip
        """Make the challenger on a rollout production (the live judge's or a person's call)."""
        role = version.stage if version.stage in ("shadow", "canary") else None
        previous = self.registry.stages.production_version(version.name)
        promoted = self.registry.promote(version.name, version.version, "; ".join(reasons))
        return promoted, self._changed(
            MODEL_PROMOTED, promoted, previous, trigger, actor, reasons,
            role=role, evidence=evidence,
        )  # fmt: skip

    def withdraw(
        self, version: ModelVersion, *, trigger: Trigger, actor: Actor, reasons: list[str],
        evidence: dict[str, Any] | None = None,
    ) -> StageChange:  # fmt: skip
        """Take the challenger off live traffic (rejected); it becomes a candidate again."""
        role = version.stage if version.stage in ("shadow", "canary") else None
        previous = self.registry.stages.production_version(version.name)
        withdrawn = self.registry.withdraw(version.name, version.version, "; ".join(reasons))
        return self._changed(
            MODEL_REJECTED, withdrawn, previous, trigger, actor, reasons,
            role=role, evidence=evidence,
        )  # fmt: skip

    def rollback(self, name: str, *, actor: Actor) -> tuple[ModelVersion, StageChange]:
        """Make the version that was production before the current one production again."""
        previous = self.registry.stages.production_version(name)
        restored = self.registry.rollback(name)
        reasons = [f"rollback from {previous}" if previous else "rollback"]
        return restored, self._changed(
            MODEL_PROMOTED, restored, previous, "rollback", actor, reasons
        )

    def _changed(
        self,
        event_name: str,
        version: ModelVersion,
        previous: str | None,
        trigger: Trigger,
        actor: Actor,
        reasons: list[str],
        *,
        role: Role | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> StageChange:
        change = StageChange(
            model=version.name,
            version=version.version,
            data_commit=version.data_commit,
            trigger=trigger,
            actor=actor,
            previous_version=previous,
            reasons=list(reasons),
            metrics=dict(version.metrics),
            role=role,
            evidence=dict(evidence or {}),
        )
        verb = {MODEL_PROMOTED: "promoted", MODEL_REJECTED: "rejected"}.get(
            event_name, f"put on live traffic as {role}:"
        )
        try:
            self.announce(Event(event_name, model_resource(version.name), change.payload()))
        finally:  # the registry changed: Grafana shows it even when Prefect did not hear of it
            annotate_if_configured(
                self.settings,
                f"{verb} {version.tag} (data {version.data_commit[:12]}, {trigger} by "
                f"{actor.kind} {actor.name}): {'; '.join(reasons)}",
                [
                    {"promoted": "promotion", "rejected": "rejection"}.get(verb, "rollout"),
                    version.name,
                ],
            )
        return change

    def _send(self, event: Event) -> None:
        send_event(PrefectAccess.of(self.settings.prefect), event, retries=1)
