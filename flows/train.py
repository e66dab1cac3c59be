"""The train flow: a model from a pinned lakeFS commit, registered, and judged by the gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from driftloop.datasets.spec import DatasetSpec
from driftloop.gate import GateDecision, GatePolicy, decide
from driftloop.ingestion import batch_lineage, load_training_frame
from driftloop.lakefs_client import LakeFSClient
from driftloop.project import ProjectModel
from driftloop.promotion import Actor, Promotions
from driftloop.provenance import git_sha
from driftloop.registry import BatchLineage, ModelRegistry, ModelVersion
from driftloop.reports import training_report
from driftloop.training import Split, TrainedModel, evaluate, split_frame, train_model
from driftloop.training_options import HoldoutMode, TrainParams
from flows.common import IO_RETRIES, emit, lakefs, project_model, run_url, settings
from flows.package import bento

JudgeOn = Literal["holdout", "newest_batch"]


@dataclass(frozen=True)
class TrainOutcome:
    """What a train run made: the version, its stage now, and why."""

    model: str
    version: str
    stage: str
    data_commit: str
    metrics: dict[str, float]
    digest: str
    promoted: bool
    bento: str | None
    reasons: list[str]
    batches: list[BatchLineage]
    flow_run_id: str

    @property
    def tag(self) -> str:
        return f"{self.model}:{self.version}"


@task(**IO_RETRIES)
def pin(client: LakeFSClient, ref: str, dataset: str) -> tuple[str, list[BatchLineage]]:
    """Resolve the data ref to a 64-hex commit id and list the batches there."""
    commit_id = client.resolve(ref)
    return commit_id, batch_lineage(client, commit_id, dataset)


@task(**IO_RETRIES)
def load(
    client: LakeFSClient, commit_id: str, spec: DatasetSpec, lineage: list[BatchLineage]
) -> tuple[pd.DataFrame, pd.Series]:
    """Read every batch of the dataset at the pinned commit (each record once)."""
    return load_training_frame(client, commit_id, spec.name, lineage, spec.id_column)


@task(cache_policy=NO_CACHE)
def fit(split: Split, model: ProjectModel, params: TrainParams) -> TrainedModel:
    """Fit the pipeline and measure it on the holdout."""
    return train_model(split, model.spec, params, model.root)


@task(cache_policy=NO_CACHE)
def register(
    registry: ModelRegistry,
    model: ProjectModel,
    trained: TrainedModel,
    commit_id: str,
    lineage: list[BatchLineage],
    code_commit: str,
) -> ModelVersion:
    """Save the model as a candidate version, with its lineage."""
    return registry.register_trained(
        model.name,
        trained,
        spec=model.spec,
        data_commit=commit_id,
        git_sha=code_commit,
        batches=lineage,
    )


@task(cache_policy=NO_CACHE)
def judge(
    registry: ModelRegistry,
    model: ProjectModel,
    challenger: ModelVersion,
    challenger_pipeline: object,
    rows: pd.DataFrame,
    policy: GatePolicy,
) -> tuple[GateDecision, dict[str, float], dict[str, float] | None]:
    """Measure the challenger and production on the same rows, then apply the gate."""
    threshold = float(challenger.metrics.get("threshold", 0.5))  # binary models have one
    challenger_metrics = evaluate(challenger_pipeline, rows, model.spec, threshold).as_dict()
    production = registry.production(model.name)
    production_metrics = None
    if production is not None:
        pipeline = registry.load(production.name, production.version)
        production_metrics = evaluate(pipeline, rows, model.spec, threshold).as_dict()
    decision = decide(challenger_metrics, production_metrics, policy)
    return decision, challenger_metrics, production_metrics


def judged_rows(split: Split, newest: pd.Series, spec: DatasetSpec, judge_on: str) -> pd.DataFrame:
    """The holdout, or only its rows from the newest batch (what traffic looks like now)."""
    if judge_on != "newest_batch":
        return split.holdout
    recent = split.holdout[newest.loc[split.holdout.index].to_numpy()]
    one_class = spec.task == "binary" and recent[spec.target].astype(int).nunique() < 2
    if len(recent) < 50 or one_class:
        return split.holdout  # too few (or one-class) recent rows to judge on: the whole holdout
    return recent


@flow(name="train")
def train(
    model: str | None = None,
    ref: str = "main",
    estimator: str | None = None,
    seed: int | None = None,
    holdout: HoldoutMode | None = None,
    promote: bool = True,
    package: bool = False,
    judge_on: JudgeOn = "holdout",
    started_by: str = "",
) -> TrainOutcome:
    """Train on the dataset at a pinned lakeFS commit; promote only if it beats production.

    ``model`` names the project's model (default: its only one); ``estimator``, ``seed`` and
    ``holdout`` override what the project declares for it.
    With ``package``, a winning challenger is packaged as a Bento once it is promoted: the
    inference service swaps it in from the registry while the Bento builds (about 10 s), and a
    build that fails fails the run after the promotion, saying so (``driftloop package`` builds
    it again). ``judge_on="newest_batch"`` judges
    challenger and production on the holdout rows of the batch that landed last (retraining on
    drift asks which model is better on today's traffic, not on last month's). ``started_by``
    names the automation trigger when one started the run (the retrain flow passes it on).
    A model whose project declares ``rollout: shadow`` or ``canary`` does not go to production
    from here once it has a production version: a winner goes on live traffic beside it
    (``driftloop.rollout.started``) and the live judge promotes or withdraws it.
    """
    logger = get_run_logger()
    config = settings()
    declared = project_model(config, model)
    spec, dataset = declared.spec, declared.dataset
    client = lakefs(config)
    params = declared.train_params(estimator=estimator, seed=seed, holdout=holdout)
    registry = ModelRegistry.from_settings(config)

    commit_id, lineage = pin(client, ref, dataset)
    logger.info("training on %s@%s = commit %s (%d batches)", dataset, ref, commit_id, len(lineage))
    frame, newest = load(client, commit_id, spec, lineage)
    split = split_frame(frame, spec, params, newest)
    trained = fit(split, declared, params)
    version = register(registry, declared, trained, commit_id, lineage, git_sha(config.git_sha))
    logger.info("registered %s: %s", version.tag, trained.metrics)

    decision, production_metrics, compared, compared_on = None, None, None, ""
    bento_tag: str | None = None
    if promote:
        rows = judged_rows(split, newest, spec, judge_on)
        logger.info("the gate judges on %d holdout rows (%s)", len(rows), judge_on)
        decision, compared, production_metrics = judge(
            registry,
            declared,
            version,
            trained.pipeline,
            rows,
            declared.gate_policy(config.registry.gate),
        )
        if rows is not split.holdout:
            compared_on = f"the {len(rows)} holdout rows of the newest batch"
        promotions = Promotions(registry, config, announce=lambda event: emit(event, config))
        actor = (
            Actor("automation", started_by, run_url())
            if started_by
            else Actor("flow_run", str(flow_run.name), run_url())
        )
        if decision.promote:
            rollout = declared.config.rollout
            if (
                rollout.mode == "direct"
                or registry.stages.production_version(declared.name) is None
            ):
                version, _ = promotions.promote(
                    version, trigger="gate", actor=actor, reasons=decision.reasons
                )
                logger.info("promoted %s to production", version.tag)
            else:
                # Passed offline: now judged on live traffic beside production.
                version, _ = promotions.start_rollout(
                    version, rollout.mode, trigger="gate", actor=actor, reasons=decision.reasons
                )
                logger.info(
                    "%s passed the gate and is on live traffic as a %s; the live judge decides",
                    version.tag, rollout.mode,
                )  # fmt: skip
            if package:  # after the promotion: the service swaps from the registry meanwhile
                bento_tag = bento([version.tag], str(config.bentoml_home), str(declared.root))
                logger.info("packaged %s as Bento %s", version.tag, bento_tag)
        else:
            promotions.reject(version, trigger="gate", actor=actor, reasons=decision.reasons)
            logger.warning("rejected %s: %s", version.tag, "; ".join(decision.reasons))
    create_markdown_artifact(
        training_report(version, decision, production_metrics, compared, compared_on, bento_tag),
        key=f"training-{declared.name}".replace("_", "-").lower(),
        description=f"{version.tag}: {version.stage}",
    )
    return TrainOutcome(
        model=version.name,
        version=version.version,
        stage=version.stage,
        data_commit=commit_id,
        metrics=version.metrics,
        digest=trained.digest,
        promoted=version.stage == "production" and bool(decision and decision.promote),
        bento=bento_tag,
        reasons=decision.reasons if decision else [],
        batches=lineage,
        flow_run_id=str(flow_run.id),
    )
