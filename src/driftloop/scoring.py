"""A compiled scoring path for the fitted pipelines driftloop trains.

scikit-learn spends about 4 ms on one row of the default pipeline (ColumnTransformer dispatch,
input checks, one call per tree), far more than the arithmetic needs. :func:`compile_pipeline`
reads the fitted parameters once: the column order of the ColumnTransformer, the categories of
the OrdinalEncoder and every tree of the HistGradientBoostingClassifier, packed into arrays of
shape (trees, nodes). Scoring then walks all trees at once, one numpy step per tree level.

The walk follows scikit-learn's own predictor (``_predictor.pyx``) rule by rule: missing values
and unknown categories take the node's missing direction, numbers go left when at or below the
threshold, categories go left when in the node's left set. Leaf values are added to the baseline
in the same order scikit-learn adds them, so the raw scores, and the probabilities, are the
same numbers. A pipeline of any other shape is not compiled (``compile_pipeline`` returns None)
and scores through scikit-learn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import expit

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


Column = tuple[str, dict[Any, int] | None]  # a record field, and category codes if categorical


@dataclass(frozen=True)
class _Walk:
    """A :class:`CompiledModel`'s node arrays, flat, as :meth:`CompiledModel.raw` reads them."""

    start: np.ndarray  # (1, trees): each tree's root
    children: np.ndarray  # (2 * trees * nodes): left then right child of each node
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    is_categorical: np.ndarray
    category_left: np.ndarray  # (trees * nodes * (categories + 1))
    any_categorical: bool  # a split on a category anywhere
    value: np.ndarray


@dataclass(frozen=True)
class CompiledModel:
    """Scores records with a fitted HistGradientBoosting pipeline's arrays directly."""

    columns: tuple[Column, ...]  # the trees' input columns, in the trees' order
    baseline: float
    feature: np.ndarray  # (trees, nodes) column index of each node
    threshold: np.ndarray  # numeric threshold: go left when value <= threshold
    missing_left: np.ndarray  # missing value (or unknown category): go left
    is_categorical: np.ndarray
    is_leaf: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray  # leaf values
    category_left: np.ndarray  # (trees, nodes, categories + 1): category code goes left
    depth: int
    link: str = (
        "logistic"  # a binary classifier's raw score -> probability; "identity": a regressor
    )

    def matrix(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """The trees' input: numbers as given (None as NaN), categories as codes (unknown NaN)."""
        rows = np.empty((len(records), len(self.columns)))
        for r, record in enumerate(records):
            row = rows[r]
            for c, (name, codes) in enumerate(self.columns):
                value = record[name]
                if codes is not None:
                    row[c] = codes.get(value, np.nan)
                else:
                    row[c] = np.nan if value is None else value
        return rows

    @cached_property
    def _walk(self) -> _Walk:
        """The trees flattened for the walk: node ``t * nodes + n`` of tree ``t``, children of
        node ``g`` at ``2g`` (left) and ``2g + 1`` (right), leaves their own children."""
        n_trees, n_nodes = self.feature.shape
        own = np.arange(n_trees * n_nodes).reshape(n_trees, n_nodes)
        offsets = own[:, :1]
        left = np.where(self.is_leaf, own, self.left + offsets)
        right = np.where(self.is_leaf, own, self.right + offsets)
        return _Walk(
            start=offsets.reshape(1, n_trees),
            children=np.stack([left, right], axis=-1).reshape(-1),
            feature=self.feature.reshape(-1),
            threshold=self.threshold.reshape(-1),
            missing_left=self.missing_left.reshape(-1),
            is_categorical=self.is_categorical.reshape(-1),
            category_left=self.category_left.reshape(-1),
            any_categorical=bool((self.is_categorical & ~self.is_leaf).any()),
            value=self.value.reshape(-1),
        )

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """The sum of the baseline and every tree's leaf value, per row."""
        walk = self._walk
        n_rows, n_columns = matrix.shape
        cells = np.ascontiguousarray(matrix).reshape(-1)
        row_start = (np.arange(n_rows) * n_columns)[:, None]
        n_categories = self.category_left.shape[2] - 1
        node = np.repeat(walk.start, n_rows, axis=0)  # (rows, trees): global node index
        for _ in range(self.depth):
            value = cells[row_start + walk.feature[node]]
            missing = np.isnan(value)
            go_left = np.where(missing, walk.missing_left[node], value <= walk.threshold[node])
            if walk.any_categorical:
                outside = missing | (value < 0) | (value >= n_categories)
                code = np.where(outside, n_categories, value).astype(np.intp)
                by_category = walk.category_left[node * (n_categories + 1) + code]
                go_left = np.where(walk.is_categorical[node], by_category, go_left)
            node = walk.children[2 * node + ~go_left]
        # Baseline first, then tree by tree: scikit-learn's order of additions, so the
        # floating-point result is identical (a running sum adds strictly left to right).
        terms = np.empty((n_rows, node.shape[1] + 1))
        terms[:, 0] = self.baseline
        terms[:, 1:] = walk.value[node]
        raw: np.ndarray = np.add.accumulate(terms, axis=1)[:, -1]
        return raw

    def score(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """The positive-class probability of each record (a regressor's value)."""
        raw = self.raw(self.matrix(records))
        scores: np.ndarray = raw if self.link == "identity" else expit(raw)
        return scores

    def stored(self) -> dict[str, Any]:
        """This model as plain data (numbers, strings, arrays; no class of driftloop), to keep
        beside the fitted pipeline: :meth:`from_stored` reads it back without scikit-learn."""
        return {
            "format": STORED_FORMAT,
            "columns": [
                [name, None if codes is None else list(codes.items())]
                for name, codes in self.columns
            ],
            "baseline": self.baseline,
            "depth": self.depth,
            "link": self.link,
            **{name: getattr(self, name) for name in _ARRAYS},
        }

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> CompiledModel | None:
        """The model :meth:`stored` wrote; None when it was written in another format."""
        if stored.get("format") != STORED_FORMAT:
            return None
        return cls(
            columns=tuple(
                (
                    str(name),
                    None if codes is None else {category: int(code) for category, code in codes},
                )
                for name, codes in stored["columns"]
            ),
            baseline=float(stored["baseline"]),
            depth=int(stored["depth"]),
            link=str(stored["link"]),
            **{name: np.asarray(stored[name]) for name in _ARRAYS},
        )


# The custom object of a registered version (BentoML model) that holds its compiled scorer.
STORED_KEY = "driftloop_compiled_scorer"
# What CompiledModel.stored writes: its format (a change of the fields is a new format, and a
# version stored in an older one is compiled again from its pipeline) and its arrays.
STORED_FORMAT = 1
_ARRAYS = (
    "feature",
    "threshold",
    "missing_left",
    "is_categorical",
    "is_leaf",
    "left",
    "right",
    "value",
    "category_left",
)


def _is_passthrough(step: Any) -> bool:
    from sklearn.preprocessing import FunctionTransformer

    return bool(
        step == "passthrough" or (isinstance(step, FunctionTransformer) and step.func is None)
    )


def _nan_encoder(step: Any) -> bool:
    """An OrdinalEncoder that turns unknown and missing categories into NaN."""
    from sklearn.preprocessing import OrdinalEncoder

    return (
        isinstance(step, OrdinalEncoder)
        and step.handle_unknown == "use_encoded_value"
        and np.isnan(step.unknown_value)
        and np.isnan(step.encoded_missing_value)
    )


def _pipeline_columns(transformer: Any) -> list[Column] | None:
    """The ColumnTransformer's output columns: passthrough numbers, then encoded categories."""
    columns: list[Column] = []
    for name, step, fields in transformer.transformers_:
        if (name == "remainder" and step == "drop") or len(fields) == 0:
            continue  # an empty selection (no categorical features) is never fitted
        if _is_passthrough(step):
            columns.extend((field, None) for field in fields)
        elif _nan_encoder(step):
            for field, categories in zip(fields, step.categories_, strict=True):
                codes = {category: code for code, category in enumerate(categories.tolist())}
                columns.append((field, codes))
        else:
            return None
    return columns


def _estimator_columns(estimator: Any, outer: list[Column]) -> list[Column] | None:
    """The columns in the order the trees see them, after the estimator's own preprocessing.

    With categorical features, HistGradientBoosting re-encodes them with an OrdinalEncoder of its
    own and moves them first; its codes replace the pipeline's.
    """
    from sklearn.preprocessing import FunctionTransformer

    preprocessor = getattr(estimator, "_preprocessor", None)
    if preprocessor is None:
        return outer
    inner: list[Column] = []
    for name, step, mask in preprocessor.transformers_:
        indices: Any = np.flatnonzero(np.asarray(mask, dtype=bool)) if len(mask) else []
        if name == "remainder":
            if len(indices) or step != "drop":
                return None
            continue
        if _nan_encoder(step):
            for index, categories in zip(indices, step.categories_, strict=True):
                field, codes = outer[index]
                if codes is None:
                    return None
                position = {float(code): at for at, code in enumerate(categories.tolist())}
                remapped = {
                    category: position[float(code)]
                    for category, code in codes.items()
                    if float(code) in position
                }
                inner.append((field, remapped))
        elif isinstance(step, FunctionTransformer):  # passthrough, as float
            inner.extend(outer[index] for index in indices)
        else:
            return None
    return inner


def compile_pipeline(pipeline: Any) -> CompiledModel | None:
    """The compiled form of a fitted ``build_pipeline`` HistGradientBoosting pipeline (a binary
    classifier, or a regressor with squared error), else None (a multiclass model has a tree
    per class and iteration: it scores through scikit-learn)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    transformer, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(transformer, ColumnTransformer):
        return None
    if isinstance(estimator, HistGradientBoostingClassifier):
        if len(estimator.classes_) != 2 or estimator.n_trees_per_iteration_ != 1:
            return None
        link = "logistic"
    elif isinstance(estimator, HistGradientBoostingRegressor):
        if estimator.loss != "squared_error" or estimator.n_trees_per_iteration_ != 1:
            return None
        link = "identity"
    else:
        return None
    outer = _pipeline_columns(transformer)
    if outer is None or len(outer) != estimator.n_features_in_:
        return None
    columns = _estimator_columns(estimator, outer)
    if columns is None or len(columns) != len(outer):
        return None
    flagged = list(np.asarray(estimator._bin_mapper.is_categorical_, dtype=bool))
    if flagged != [codes is not None for _, codes in columns]:
        return None

    known, feature_map = estimator._bin_mapper.make_known_categories_bitsets()
    predictors = [iteration[0] for iteration in estimator._predictors]
    n_trees = len(predictors)
    n_nodes = max(len(p.nodes) for p in predictors)
    n_categories = max((len(codes) for _, codes in columns if codes is not None), default=0)

    def packed(dtype: Any) -> np.ndarray:
        return np.zeros((n_trees, n_nodes), dtype=dtype)

    def in_bitset(bitset: np.ndarray, code: int) -> bool:
        return bool((int(bitset[code >> 5]) >> (code & 31)) & 1)

    feature, threshold = packed(np.intp), packed(np.float64)
    missing_left, is_categorical, is_leaf = packed(bool), packed(bool), packed(bool)
    left, right, value = packed(np.intp), packed(np.intp), packed(np.float64)
    category_left = np.zeros((n_trees, n_nodes, n_categories + 1), dtype=bool)
    is_leaf[:] = True  # padding nodes are leaves that are never reached
    depth = 0
    for t, predictor in enumerate(predictors):
        nodes = predictor.nodes
        size = len(nodes)
        feature[t, :size] = nodes["feature_idx"]
        threshold[t, :size] = nodes["num_threshold"]
        missing_left[t, :size] = nodes["missing_go_to_left"].astype(bool)
        is_categorical[t, :size] = nodes["is_categorical"].astype(bool)
        is_leaf[t, :size] = nodes["is_leaf"].astype(bool)
        left[t, :size] = nodes["left"]
        right[t, :size] = nodes["right"]
        value[t, :size] = nodes["value"]
        depth = max(depth, int(nodes["depth"].max()))
        for n in np.flatnonzero(is_categorical[t, :size] & ~is_leaf[t, :size]):
            node = nodes[n]
            left_set = predictor.raw_left_cat_bitsets[node["bitset_idx"]]
            known_set = known[feature_map[node["feature_idx"]]]
            missing = bool(node["missing_go_to_left"])
            # scikit-learn: in the left set -> left; known -> right; unknown -> as missing.
            for code in range(n_categories):
                category_left[t, n, code] = in_bitset(left_set, code) or (
                    not in_bitset(known_set, code) and missing
                )
            category_left[t, n, n_categories] = missing
    return CompiledModel(
        columns=tuple(columns),
        baseline=float(np.asarray(estimator._baseline_prediction).ravel()[0]),
        feature=feature,
        threshold=threshold,
        missing_left=missing_left,
        is_categorical=is_categorical,
        is_leaf=is_leaf,
        left=left,
        right=right,
        value=value,
        category_left=category_left,
        depth=depth,
        link=link,
    )


UNSEEN = "\x00unseen category"


def probe_records(model: CompiledModel, count: int = 256, seed: int = 0) -> list[dict[str, Any]]:
    """Records that exercise every split: each number at, just above and beyond its thresholds,
    missing numbers, and every category plus one the model never saw."""
    rng = np.random.default_rng(seed)
    candidates: list[list[Any]] = []
    for c, (_, codes) in enumerate(model.columns):
        if codes is not None:
            candidates.append([*codes, UNSEEN])
            continue
        used = ~model.is_leaf & ~model.is_categorical & (model.feature == c)
        values: list[Any] = [None, 0.0]
        for threshold in np.unique(model.threshold[used]).tolist():
            values += [threshold, float(np.nextafter(threshold, np.inf)), threshold + 1.0]
        candidates.append(values)
    return [
        {
            name: options[rng.integers(len(options))]
            for (name, _), options in zip(model.columns, candidates, strict=True)
        }
        for _ in range(count)
    ]


def records_frame(features: list[dict[str, Any]], records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as the frame the pipeline was trained on (categories as objects, rest float)."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for feature in features:
        values = [record[feature["name"]] for record in records]
        if feature["type"] == "categorical":
            columns[feature["name"]] = np.array(values, dtype=object)
        else:
            columns[feature["name"]] = np.array(values, dtype=np.float64)
    return pd.DataFrame(columns)


def compile_checked(
    pipeline: Any, features: list[dict[str, Any]], task: str = "binary"
) -> CompiledModel | None:
    """The compiled scorer of ``pipeline`` if it gives scikit-learn's scores (a regressor's
    values) exactly, else None.

    The check scores probe records that reach every split (``probe_records``) both ways; any
    difference, or a pipeline of a shape that is not compiled, leaves scoring to scikit-learn.
    """
    try:
        compiled = compile_pipeline(pipeline)
    except Exception:  # a scikit-learn whose fitted attributes look different
        log.warning("could not compile the model; scoring through scikit-learn", exc_info=True)
        return None
    if compiled is None:
        log.info("this model's pipeline is not one the compiled path covers; using scikit-learn")
        return None
    filler = {
        f["name"]: (f["categories"] or [None])[0] if f["type"] == "categorical" else 0.0
        for f in features
    }
    probes = [{**filler, **record} for record in probe_records(compiled)]
    frame = records_frame(features, probes)
    if task == "regression":
        expected = np.asarray(pipeline.predict(frame), dtype=np.float64)
    else:
        expected = pipeline.predict_proba(frame)[:, 1]
    if not np.array_equal(compiled.score(probes), expected):
        log.warning("the compiled model disagrees with scikit-learn; scoring through scikit-learn")
        return None
    return compiled
