"""What the inference service accepts and answers, from a dataset spec: the strict model of one
record, what /feedback takes as a label, and the OpenAPI document of the routes.

Apart from ``driftloop.serving`` (scoring, followers: numpy, pandas, scikit-learn) so that
``bentoml serve``'s own process, which only reads the service's definition, holds none of them.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    create_model,
)
from typing_extensions import TypedDict

from driftloop.datasets.spec import DatasetSpec


def _annotations(spec: DatasetSpec, from_json: bool = False) -> dict[str, Any]:
    """Each feature's type, as a strict validator takes it (``from_json``: read from JSON text
    by pydantic, whose parser keeps integers of any size where orjson's, which read every body
    before, makes those beyond 64 bits floats: they are refused the same)."""
    fields: dict[str, Any] = {}
    for feature in spec.features:
        if feature.type == "numeric":
            annotation: Any = float  # strict: JSON numbers only (integers are fine)
        elif feature.type == "integer" and from_json:
            annotation = Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)]
        elif feature.type == "integer":
            annotation = StrictInt
        elif feature.type == "boolean":
            annotation = StrictBool
        else:
            annotation = Literal[tuple(feature.categories or ())]  # type: ignore[misc]
        if feature.nullable:
            annotation = annotation | None
        fields[feature.name] = annotation
    return fields


def record_model(spec: DatasetSpec) -> type[BaseModel]:
    """A strict model of one input record: every feature required, nothing else accepted.

    Numbers must be JSON numbers (integers for integer features), booleans JSON booleans, and
    categories one of the spec's. Ranges are not enforced here: values outside the training
    range are what drift monitoring is for.
    """
    fields = {name: (annotation, ...) for name, annotation in _annotations(spec).items()}
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{spec.name.title().replace('_', '')}Record",
        __config__=ConfigDict(extra="forbid", strict=True),
        **fields,
    )


def record_readers(spec: DatasetSpec) -> tuple[TypeAdapter[Any], TypeAdapter[list[Any]]]:
    """Validators of a request body as bytes, one record and a list of them, that give the
    records back as dicts (numbers of numeric features as floats) in one pass over the JSON:
    the rules of :func:`record_model` (NaN and infinities refused too, as a JSON parser does).
    A body they refuse is read again the slow way, which says what is wrong with it."""
    record = TypedDict(  # type: ignore[misc]
        f"{spec.name.title().replace('_', '')}RecordDict", _annotations(spec, from_json=True)
    )
    record.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        extra="forbid", strict=True, allow_inf_nan=False
    )
    return TypeAdapter(record), TypeAdapter(list[record])  # type: ignore[valid-type]


def feedback_label(spec: DatasetSpec, value: Any) -> float | None:
    """The true label of a feedback as the prediction log stores it (0/1, the class's index, the
    number), or None when ``value`` is not a label of the spec's target: a JSON integer 0 or 1,
    one of the classes (a string), or a finite JSON number (not a boolean)."""
    if spec.target_type == "categorical":
        classes = spec.classes or ()
        return float(classes.index(value)) if isinstance(value, str) and value in classes else None
    if spec.target_type == "numeric":
        if type(value) not in (int, float) or not math.isfinite(value):
            return None
        return float(value)
    # JSON integers only: 1.0 and true compare equal to 1 in Python but are not labels.
    return float(value) if type(value) is int and value in (0, 1) else None


def label_description(spec: DatasetSpec) -> str:
    """What /feedback accepts as ``label``, for its 422 message."""
    if spec.target_type == "categorical":
        return f"one of the classes {', '.join(spec.classes or ())}"
    if spec.target_type == "numeric":
        return "a finite number"
    return "the integer 0 or 1"


def prediction_schema(spec: DatasetSpec) -> dict[str, Any]:
    """The JSON schema of one answer of /predict, for the spec's task."""
    common = {"prediction_id": {"type": "string"}, "model_version": {"type": "string"}}
    if spec.target_type == "categorical":
        classes = list(spec.classes or ())
        answer = {
            "class": {"type": "string", "enum": classes},
            "probabilities": {
                "type": "object",
                "required": classes,
                "additionalProperties": False,
                "properties": {
                    name: {"type": "number", "minimum": 0, "maximum": 1} for name in classes
                },
            },
        }
    elif spec.target_type == "numeric":
        answer = {"value": {"type": "number"}}
    else:
        answer = {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "label": {"type": "integer", "enum": [0, 1]},
        }
    return {
        "type": "object",
        "required": ["prediction_id", *answer, "model_version"],
        "properties": {"prediction_id": common["prediction_id"], **answer, **common},
    }


def label_schema(spec: DatasetSpec) -> dict[str, Any]:
    """The JSON schema of /feedback's ``label`` for the spec's target."""
    if spec.target_type == "categorical":
        return {"type": "string", "enum": list(spec.classes or ())}
    if spec.target_type == "numeric":
        return {"type": "number"}
    return {"type": "integer", "enum": [0, 1]}


def openapi_document(spec: DatasetSpec, record: type[BaseModel], max_rows: int) -> dict[str, Any]:
    """The OpenAPI 3 document of the service's own routes (served at /openapi.json)."""
    record_schema = record.model_json_schema()
    error = {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string"}},
    }

    def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    prediction = prediction_schema(spec)
    failures = {
        "401": answer("Missing or wrong X-API-Key", error),
        "422": answer("A field is missing, unknown or of the wrong type", error),
        "503": answer("No model loaded yet, or the prediction log is unavailable", error),
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"driftloop inference ({spec.name})", "version": "1"},
        "paths": {
            "/predict": {
                "post": {
                    "operationId": "predict",
                    "summary": f"Score one {spec.name} record or a list of them",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Record"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Record"},
                                            "minItems": 1,
                                            "maxItems": max_rows,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": answer(
                            "One answer per record",
                            {"oneOf": [prediction, {"type": "array", "items": prediction}]},
                        ),
                        "400": answer("Not JSON", error),
                        "413": answer(f"More than {max_rows} records", error),
                        **failures,
                    },
                }
            },
            "/feedback": {
                "post": {
                    "operationId": "feedback",
                    "summary": "Attach the true label to an earlier prediction",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["prediction_id", "label"],
                                    "properties": {
                                        "prediction_id": {"type": "string", "minLength": 1},
                                        "label": label_schema(spec),
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": answer("Recorded, or already recorded", {"type": "object"}),
                        "400": answer("Not JSON", error),
                        "404": answer("No such prediction", error),
                        "409": answer("The prediction has a different label already", error),
                        **failures,
                    },
                }
            },
            "/model": {
                "get": {
                    "operationId": "model",
                    "summary": "The model answering: version, data commit, holdout metrics",
                    "responses": {"200": answer("The model", {"type": "object"}), **failures},
                }
            },
        },
        "components": {"schemas": {"Record": record_schema}},
    }


def openapi_for(
    models: list[tuple[str, DatasetSpec, type[BaseModel]]], max_rows: int
) -> dict[str, Any]:
    """The OpenAPI document of the service: a one-model project's short routes (/predict,
    /feedback, /model), or each model's routes under ``/models/<name>`` (its record schema
    named after its dataset)."""
    if len(models) == 1:
        _, spec, record = models[0]
        return openapi_document(spec, record, max_rows)
    merged: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": f"driftloop inference ({', '.join(name for name, _, _ in models)})",
            "version": "1",
        },
        "paths": {},
        "components": {"schemas": {}},
    }
    for name, spec, record in models:
        schema_name = record.__name__
        text = json.dumps(openapi_document(spec, record, max_rows))
        document = json.loads(
            text.replace('"#/components/schemas/Record"', f'"#/components/schemas/{schema_name}"')
        )
        for path, item in document["paths"].items():
            for operation in item.values():
                operation["operationId"] = f"{operation['operationId']}_{name.replace('-', '_')}"
            routed = f"/models/{name}" if path == "/model" else f"/models/{name}{path}"
            merged["paths"][routed] = item
        merged["components"]["schemas"][schema_name] = document["components"]["schemas"]["Record"]
    return merged
