"""``driftloop train``, ``package`` and ``model``: training and the model registry."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from driftloop.cli.root import (
    JsonOption,
    ModelOption,
    app,
    console,
    errors,
    fail,
    flow_run_page,
    load_settings,
    prefect_api_url,
    print_json,
    project_model,
    running_flows,
    settings_with_prefect,
    show_table,
)
from driftloop.events import EventNotDelivered
from driftloop.promotion import Actor, Promotions, StageChange
from driftloop.registry import ModelRegistry, ModelVersion, RegistryError
from driftloop.settings import Settings
from driftloop.tasks import ALL_METRICS


def estimator_name(value: str | None) -> str | None:
    """The --estimator option, checked before anything runs."""
    if value is None:
        return None
    from driftloop.project import check_estimator

    try:
        return check_estimator(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


class HoldoutChoice(enum.StrEnum):
    """``driftloop.training.HoldoutMode``, as a CLI choice."""

    stratified = "stratified"
    newest_batch = "newest_batch"


model_app = typer.Typer(
    help="Model versions: list, show, promote, roll back, rollouts.", no_args_is_help=True
)
app.add_typer(model_app, name="model")


@app.command()
def train(
    model: ModelOption = "",
    ref: Annotated[
        str, typer.Option(help="lakeFS ref to train on; pinned to its commit id")
    ] = "main",
    estimator: Annotated[
        str | None,
        typer.Option(
            help="hist_gradient_boosting, logistic_regression or module:function in the "
            "project (default: the project's)",
            callback=estimator_name,
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the split and the estimator (default: 42)")
    ] = None,
    holdout: Annotated[
        HoldoutChoice | None,
        typer.Option(help="How the holdout is drawn (default: stratified)", case_sensitive=False),
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Put the model through the gate (--no-promote: register only)")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Train on a pinned lakeFS commit, register the model, and promote it if it wins the gate."""
    settings = settings_with_prefect()
    declared = project_model(settings, model)
    if not as_json:
        console.print(
            f"training {declared.name} on {declared.dataset}@{ref}; Prefect at "
            f"{prefect_api_url(settings)}",
            highlight=False,
        )

    from driftloop.lakefs_client import LakeFSError
    from flows.train import train as train_flow

    with running_flows(settings):
        state = train_flow(
            declared.name,
            ref,
            estimator,
            seed,
            holdout.value if holdout else None,
            promote,
            return_state=True,
        )
        try:
            outcome = state.result()
        except (LakeFSError, ValueError) as problem:
            page = flow_run_page(settings, state.state_details.flow_run_id)
            fail(f"{problem}\nflow run: {page}")
    run_page = flow_run_page(settings, outcome.flow_run_id)
    if as_json:
        print_json({**dataclasses.asdict(outcome), "flow_run_url": run_page})
        return
    console.print(
        f"{outcome.tag} is [bold]{outcome.stage}[/]; data commit {outcome.data_commit}",
        highlight=False,
        soft_wrap=True,
    )
    metrics = outcome.metrics
    console.print(
        "  ".join(f"{name} {metrics[name]:.4f}" for name in ALL_METRICS if name in metrics),
        highlight=False,
    )
    for reason in outcome.reasons:
        console.print(f"  gate: {reason}", highlight=False, soft_wrap=True)
    console.print(f"flow run {run_page}", highlight=False, soft_wrap=True)


@app.command()
def package(
    model: Annotated[
        str,
        typer.Option(
            "--model", help="Package only this model of the project (default: all of them)"
        ),
    ] = "",
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Also write the Bento and its models to this .bento archive (or into this "
            "folder), for `bentoml import` on a machine without driftloop's state",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a Bento of the inference service with the production models (offline): it
    follows a registry when it has one beside it, else answers with the models it carries."""
    settings = settings_with_prefect()
    if model:
        project_model(settings, model)  # a model the project does not declare stops here

    from driftloop.project import ProjectError
    from flows.common import in_process
    from flows.package import package as package_flow
    from services.inference.bento import PackagingError

    if not as_json:
        console.print("building the Bento (driftloop's wheel, the models, the project's files)")
    with in_process(settings):
        try:
            built = package_flow(model or None, str(export) if export else None)
        except (RegistryError, PackagingError, ProjectError) as problem:
            fail(str(problem))
    if as_json:
        print_json(built)
        return
    console.print(f"Bento {built.bento} with {', '.join(built.models)}", highlight=False)
    if built.archive:
        console.print(
            f"archive {built.archive}: `bentoml import {built.archive}`, then "
            f"`bentoml serve {built.bento}`",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"image: {built.image or 'not built (no container engine here)'}")


def open_registry(model: str) -> tuple[Settings, ModelRegistry, str]:
    """Settings, the registry, and the name of the project's ``model`` (default: its only)."""
    settings = load_settings()
    registry = ModelRegistry.from_settings(settings)
    return settings, registry, project_model(settings, model).name


@model_app.command("list")
def model_list(
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """Every version of the dataset's model, with stage, data commit and holdout metrics."""
    _, registry, name = open_registry(model)
    versions = registry.versions(name)
    if as_json:
        print_json(versions)
        return
    table = Table(title=name, title_justify="left")
    recorded = {metric for version in versions for metric in version.metrics}
    shown = [metric for metric in ALL_METRICS if metric in recorded][:3]  # the task's first three
    for column in ("version", "stage", "created", "data commit", *shown):
        table.add_column(column, no_wrap=True)
    for version in versions:
        style = "bold green" if version.stage == "production" else None
        table.add_row(
            version.version,
            version.stage,
            version.created[:16].replace("T", " "),
            version.data_commit,
            *(
                f"{version.metrics[metric]:.4f}" if metric in version.metrics else "–"
                for metric in shown
            ),
            style=style,
        )
    show_table(table)


@model_app.command("history")
def model_history(
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """What happened to the model's versions: registered, promoted, rejected, rolled back."""
    _, registry, name = open_registry(model)
    entries = registry.history(name)
    if as_json:
        print_json(entries)
        return
    table = Table(title=f"{name} history", title_justify="left")
    for column in ("when (UTC)", "version"):
        table.add_column(column, no_wrap=True)
    for column in ("event", "detail"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        when = datetime.datetime.fromtimestamp(entry.at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, entry.version, entry.event, entry.detail)
    show_table(table)


@model_app.command("show")
def model_show(
    version: Annotated[str, typer.Argument(help="Version, or name:version")],
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """One version with its lineage: model -> data commit -> batches -> ingestion runs."""
    _, registry, default_name = open_registry(model)
    name, _, number = version.rpartition(":")
    name = name or default_name
    try:
        found = registry.get(name, number)
    except RegistryError as problem:
        fail(str(problem))
    if as_json:
        print_json(found)
        return
    console.print(f"[bold]{found.tag}[/]  stage {found.stage}  created {found.created}")
    console.print(f"data commit {found.data_commit}  code {found.git_sha}", highlight=False)
    console.print(f"holdout {found.split}; digest {found.digest}", highlight=False)
    console.print(
        "  ".join(
            f"{k} {v:.4f}" for k, v in found.metrics.items() if k not in ("rows", "positives")
        ),
        highlight=False,
    )
    table = Table(title="lineage: batches at the data commit", title_justify="left")
    for column in ("batch", "rows", "merge commit", "ingestion run"):
        table.add_column(column, no_wrap=True)
    for batch in found.batches:
        table.add_row(batch.batch_id, str(batch.rows), batch.merge_commit, batch.run_url or "")
    show_table(table)


@model_app.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument(help="Version to make production")],
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """Make a version production by hand (bypasses the gate; recorded in the history)."""
    settings, registry, name = open_registry(model)
    change_stage(
        lambda: Promotions(registry, settings).promote(
            registry.get(name, version),
            trigger="manual",
            actor=Actor.cli_user(),
            reasons=["promoted by hand (driftloop model promote)"],
        ),
        lambda: registry.get(name, version),
        as_json,
        lambda promoted: f"{promoted.tag} is production",
    )


@model_app.command("rollback")
def model_rollback(
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """Make the previous production version production again."""
    settings, registry, name = open_registry(model)
    change_stage(
        lambda: Promotions(registry, settings).rollback(name, actor=Actor.cli_user()),
        lambda: registry.require_production(name, "show"),
        as_json,
        lambda restored: f"rolled back: {restored.tag} is production again",
    )


def change_stage(
    act: Callable[[], tuple[ModelVersion, StageChange]],
    after: Callable[[], ModelVersion],
    as_json: bool,
    said: Callable[[ModelVersion], str],
) -> None:
    """Change a stage with ``act``: a refusal of the registry fails the command; an event
    Prefect did not take only warns (the registry changed: ``after`` reads the version). Prints
    the event's payload (or the version) with --json, else what ``said`` says."""
    try:
        version, change = act()
    except RegistryError as problem:
        fail(str(problem))
    except EventNotDelivered as problem:
        warn_undelivered(problem)
        version, change = after(), None
    if as_json:
        print_json(change.payload() if change else version)
        return
    console.print(said(version), highlight=False)


rollout_app = typer.Typer(
    help="The challenger on live traffic (shadow or canary): status, promote, abort.",
    no_args_is_help=True,
)
model_app.add_typer(rollout_app, name="rollout")


@dataclasses.dataclass(frozen=True)
class RolloutStatus:
    """A model's rollout as `driftloop model rollout status` shows it."""

    model: str
    mode: str
    production: str | None
    challenger: str | None
    role: str | None
    started_at: str | None
    hours: float | None
    max_hours: float
    overdue: bool
    share: float | None
    min_labels: int
    alpha: float


def rollout_status(settings: Settings, registry: ModelRegistry, name: str) -> RolloutStatus:
    config = project_model(settings, name).config.rollout
    challenger = registry.challenger(name)
    started = registry.stages.rollout_started_at(name, challenger.version) if challenger else None
    hours = (
        None
        if started is None
        else (datetime.datetime.now(datetime.UTC).timestamp() - started) / 3600
    )
    return RolloutStatus(
        model=name,
        mode=config.mode,
        production=registry.stages.production_version(name),
        challenger=challenger.version if challenger else None,
        role=challenger.stage if challenger else None,
        started_at=(
            None
            if started is None
            else datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(
                timespec="seconds"
            )
        ),
        hours=hours,
        max_hours=config.max_hours,
        overdue=hours is not None and hours > config.max_hours,
        share=config.share if config.mode == "canary" else None,
        min_labels=config.min_labels,
        alpha=config.alpha,
    )


@rollout_app.command("status")
def rollout_status_command(
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """Which version is production, which is judged beside it, since when."""
    settings, registry, name = open_registry(model)
    status = rollout_status(settings, registry, name)
    if as_json:
        print_json(status)
        return
    console.print(
        f"{name}: rollout {status.mode}; production {status.production or '(none)'}",
        highlight=False,
    )
    if status.challenger is None:
        console.print(
            "no challenger on live traffic"
            + (
                ""
                if status.mode != "direct"
                else " (direct: a gate winner goes straight to production)"
            ),
            highlight=False,
        )
        return
    share = f", answering {status.share:.0%} of requests" if status.role == "canary" else ""
    console.print(
        f"{status.role} {status.challenger}{share}, since {status.started_at} "
        f"({status.hours:.1f} h of at most {status.max_hours:g} h"
        + (
            "; OVERDUE: decide with `driftloop model rollout promote` or `abort`"
            if status.overdue
            else ""
        )
        + f"); the judge decides after {status.min_labels} labelled rows per model at "
        f"alpha {status.alpha:g}",
        highlight=False,
        soft_wrap=True,
    )


def _challenger_or_fail(registry: ModelRegistry, name: str) -> ModelVersion:
    challenger = registry.challenger(name)
    if challenger is None:
        fail(f"{name} has no challenger on live traffic (see `driftloop model rollout status`)")
    return challenger


@rollout_app.command("promote")
def rollout_promote(
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """Make the challenger production now, without waiting for the judge."""
    settings, registry, name = open_registry(model)
    challenger = _challenger_or_fail(registry, name)
    change_stage(
        lambda: Promotions(registry, settings).promote_challenger(
            challenger,
            trigger="manual",
            actor=Actor.cli_user(),
            reasons=[f"{challenger.stage} promoted by hand (driftloop model rollout promote)"],
        ),
        lambda: registry.get(name, challenger.version),
        as_json,
        lambda promoted: f"{promoted.tag} is production (was the {challenger.stage})",
    )


@rollout_app.command("abort")
def rollout_abort(
    model: ModelOption = "",
    as_json: JsonOption = False,
) -> None:
    """Take the challenger off live traffic; production stays as it is."""
    settings, registry, name = open_registry(model)
    challenger = _challenger_or_fail(registry, name)
    promotions = Promotions(registry, settings)
    change_stage(
        lambda: (
            challenger,
            promotions.withdraw(
                challenger,
                trigger="manual",
                actor=Actor.cli_user(),
                reasons=[f"{challenger.stage} aborted by hand (driftloop model rollout abort)"],
            ),
        ),
        lambda: registry.get(name, challenger.version),
        as_json,
        lambda _: (
            f"{challenger.tag} is off live traffic (a candidate again); production is unchanged"
        ),
    )


def warn_undelivered(problem: EventNotDelivered) -> None:
    """The registry changed, but Prefect did not hear of it: a warning, not a failure."""
    errors.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
