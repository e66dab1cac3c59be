"""The inference service: driftloop's production model over HTTP, one BentoML service.

Routes (a bare Starlette router mounted in the BentoML service; of BentoML's middleware only
the request metrics and the timeout stay around it, see ``middleware.py``):

- ``POST /predict``: one record or a list; each answer has a prediction id, the score, the label
  and the model version that produced it. Records are validated against the dataset spec: a
  missing, unknown or mistyped field gets 422 naming it; more than
  DRIFTLOOP_SERVING__MAX_BATCH_ROWS records, or a body over DRIFTLOOP_SERVING__MAX_BODY_BYTES
  (refused before it is read whole), get 413.
- ``POST /feedback``: ``{"prediction_id": ..., "label": 0|1}``; unknown id 404, a repeat of the
  same label is accepted and changes nothing, a different label for a labelled prediction 409.
- ``GET /model``: name, version, data commit and holdout metrics of the model answering, and
  ``serving``: the mode (following the registry, or pinned to the packaged model) and why.
- ``GET /openapi.json``: the OpenAPI document of these routes, built from the dataset spec.
- BentoML's own ``/healthz``, ``/livez``, ``/readyz`` (ready only once a model is loaded) and
  ``/metrics`` (driftloop's metrics beside ``bentoml_service_*``).

When DRIFTLOOP_SERVING__API_KEY is set, /predict, /feedback and /model want it in ``X-API-Key``.
Every prediction is appended to a spool file before it is answered and reaches the prediction
log (SQL) off the request path, so an answered prediction survives the worker being killed.
Following a registry, the service swaps to each new production version without a restart
(``driftloop.serving``); a Bento with no registry beside it answers with the models packaged in
it (``driftloop.serving_mode``). The service creates the folders it writes when it starts, and
stops with one line naming the setting when it cannot.

Settings are read when this module is imported: BentoML needs the service class, and so the
input schema derived from the dataset spec, at that moment. Nothing is written before the
service starts (``bentoml build`` imports this module too). What a serving process does lives in
``runtime.py``, imported when a worker starts the service: `bentoml serve`'s own process, which
imports this module to read the service's definition and then only supervises its workers,
holds no numpy, pandas, scikit-learn or prediction log.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bentoml
import orjson
from starlette.routing import Router

from driftloop.project import find_project
from driftloop.records import openapi_for, record_model
from driftloop.serving_mode import bento_home, choose_mode, packaged_models
from driftloop.settings import get_settings
from services.inference import middleware

if TYPE_CHECKING:
    from services.inference.runtime import InferenceRuntime

# A Bento's src: its service.py, the project's files and the record of its packaged models.
CODE_FOLDER = Path(__file__).resolve().parent
SETTINGS = bento_home(get_settings(), CODE_FOLDER)
PROJECT = find_project(SETTINGS.project)
PROJECT.make_importable()
MODE = choose_mode(SETTINGS, packaged_models(SETTINGS, CODE_FOLDER, PROJECT.names))
# Pinned, the service answers for the models it carries; following, for every model declared.
SERVED_MODELS = [
    model for model in PROJECT.models if MODE.mode == "following" or model.name in MODE.packaged
]
OPENAPI = orjson.dumps(
    openapi_for(
        [(m.name, m.spec, record_model(m.spec)) for m in SERVED_MODELS],
        SETTINGS.serving.max_batch_rows,
    )
)

# A Router, not a Starlette app: BentoML's app around it already handles errors and exceptions.
app = Router()

SERVICE_NAME = "driftloop-inference"
# Before BentoML builds the app around the service: only the middleware this service uses.
middleware.install(SERVICE_NAME, trace_requests=SETTINGS.serving.trace_requests)


@bentoml.service(
    name=SERVICE_NAME,
    workers=SETTINGS.serving.workers,
    traffic={"timeout": 30},
    logging={"access": {"enabled": SETTINGS.serving.access_log}},
)
@bentoml.asgi_app(app, path="/")
class InferenceService:
    """Answers predictions with the production model and logs every one of them."""

    def __init__(self) -> None:
        # Here, not at the top: only a serving process needs what the runtime imports.
        from services.inference.runtime import InferenceRuntime, served_model

        self.runtime: InferenceRuntime = InferenceRuntime(
            SETTINGS,
            MODE,
            {model.name: served_model(model.name, model.spec) for model in SERVED_MODELS},
            # How each model reaches production after the gate: direct, or a rollout.
            {model.name: model.config.rollout for model in PROJECT.models},
            OPENAPI,
        )
        app.routes.extend(self.runtime.routes())

    def __is_ready__(self) -> bool:
        return self.runtime.ready()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop following the registry and write out every queued prediction."""
        self.runtime.shutdown()
