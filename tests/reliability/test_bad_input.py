"""Promise 1: every malformed input gets our own clear error; nothing is harmed.

Each case names the bad thing done, the error and a pattern its message must match: the
argument, what was expected and what was received. The raising frame must be skneuralode's
or scikit-learn's declared validation (never torch or numpy internals), and the fitted
estimator the input was thrown at must keep its fitted state bit for bit and predict exactly
as before.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn_helpers import (
    QUICK,
    QUICK_UDE,
    T,
    Y,
    assert_same_fitted_state,
    feature_map_of_wrong_shape,
    feature_map_returning_numpy,
    feature_map_that_raises,
    feature_map_with_nan,
    fitted_state,
    known_of_wrong_shape,
    known_returning_nan,
    known_returning_numpy,
    raised_by_our_validation,
)

from skneuralode import MultipleShooting, NeuralODERegressor, UniversalODERegressor
from skneuralode._params import (
    MAX_AUGMENT_DIM,
    MAX_HIDDEN_LAYERS,
    MAX_ITERATIONS,
    MAX_LAYER_WIDTH,
)
from skneuralode._settings import SETTINGS_CLASSES

#: The quick fits here are deliberately short; their "poor fit" warning is not the point.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The fit is poor:sklearn.exceptions.ConvergenceWarning"
)


@pytest.fixture(scope="module")
def fitted_node() -> NeuralODERegressor:
    return NeuralODERegressor(**QUICK).fit(T, Y)


@pytest.fixture(scope="module")
def fitted_ude() -> UniversalODERegressor:
    return UniversalODERegressor(**QUICK_UDE).fit(T, Y)


@dataclass(frozen=True)
class BadInput:
    """One malformed input: what is done with it, the error and its message.

    ``call`` receives a deep copy of a fitted estimator and does the bad thing with it
    (hyper-parameter cases ``set_params`` then ``fit``; the "not fitted" cases clone it).
    ``match`` must name the argument and what was expected.
    """

    name: str
    call: Callable[[Any], object]
    error: type[Exception]
    match: str


def with_nan(values: np.ndarray, index: tuple[int, ...], value: float = math.nan) -> np.ndarray:
    copied = values.astype(float)
    copied[index] = value
    return copied


DUPLICATED_T = T.copy()
DUPLICATED_T[4] = DUPLICATED_T[3]
TWO_T = np.stack([T, T])
ALL_NAN_STATE = np.column_stack([Y[:, 0], np.full(len(T), np.nan)])


def refit(**params: Any) -> Callable[[Any], object]:
    return lambda est: est.set_params(**params).fit(T, Y)


# fmt: off
COMMON_FIT_DATA = [
    BadInput("t-is-None", lambda e: e.fit(None, Y), TypeError, r"^t must be an array.*got None"),
    BadInput("y-is-None", lambda e: e.fit(T, None), ValueError, r"\by\b.*None"),
    BadInput("t-shorter-than-y", lambda e: e.fit(T[:-1], Y),
             ValueError, r"y has 20 time points but the matching t has 19"),
    BadInput("nan-in-t", lambda e: e.fit(with_nan(T, (3,)), Y),
             ValueError, r"^t must be finite: it contains NaN or inf"),
    BadInput("inf-in-t", lambda e: e.fit(with_nan(T, (3,), math.inf), Y),
             ValueError, r"^t must be finite: it contains NaN or inf"),
    BadInput("inf-in-y", lambda e: e.fit(T, with_nan(Y, (2, 0), math.inf)),
             ValueError, r"^y contains inf; use NaN to mark values that were not observed"),
    BadInput("-inf-in-y", lambda e: e.fit(T, with_nan(Y, (2, 1), -math.inf)),
             ValueError, r"^y contains inf"),
    BadInput("duplicate-times", lambda e: e.fit(DUPLICATED_T, Y),
             ValueError, r"^t has duplicate time 0\.63\d* within one trajectory"),
    BadInput("empty-series", lambda e: e.fit(np.array([]), np.empty((0, 2))),
             ValueError, r"^t needs at least 2 time point\(s\) per trajectory, got 0"),
    BadInput("one-point-series", lambda e: e.fit(T[:1], Y[:1]),
             ValueError, r"^t needs at least 2 time point\(s\) per trajectory, got 1"),
    BadInput("all-nan-y", lambda e: e.fit(T, np.full_like(Y, np.nan)),
             ValueError, r"^y holds no observation at all"),
    BadInput("y0-wrong-shape", lambda e: e.fit(T, ALL_NAN_STATE, y0=[1.0, 2.0, 3.0]),
             ValueError, r"^y0 must have shape \(2,\) or \(1, 2\)"),
    BadInput("y0-inf", lambda e: e.fit(T, ALL_NAN_STATE, y0=[np.inf, 0.0]),
             ValueError, r"^y0 contains inf"),
    BadInput("complex-y", lambda e: e.fit(T, Y + 1j),
             ValueError, r"^y must hold real numbers, got complex dtype complex128"),
    BadInput("complex-t", lambda e: e.fit(T + 0j, Y),
             ValueError, r"^t must hold real numbers, got complex dtype"),
    BadInput("object-y-with-strings", lambda e: e.fit(T, np.array([["a", 1]] * 20, object)),
             TypeError, r"^y must hold real numbers, got values of type \['int', 'str'\]"),
    BadInput("string-dtype-y", lambda e: e.fit(T, np.array([["a", "b"]] * 20)),
             TypeError, r"^y must hold real numbers, got dtype <U1"),
    BadInput("string-t", lambda e: e.fit("0 1 2", Y),
             TypeError, r"^t must be an array of real numbers, got a string '0 1 2'"),
    BadInput("datetime-t", lambda e: e.fit(np.arange(20).astype("datetime64[s]"), Y),
             TypeError, r"^t must hold real numbers, got dtype datetime64\[s\]; convert dates"),
    BadInput("3d-t",
             lambda e: e.fit(T[None, None], Y),
             ValueError,
             r"^t must be 1-D \(n_times,\), 2-D \(n_traj, n_times\).*got shape \(1, 1, 20\)"),
    BadInput("4d-y", lambda e: e.fit(T, Y[None, None]),
             ValueError, r"^y must have shape .*got shape \(1, 1, 20, 2\)"),
    BadInput("zero-states", lambda e: e.fit(T, np.empty((20, 0))),
             ValueError, r"^y has no state \(zero columns\)"),
    BadInput("2d-t-with-2d-y", lambda e: e.fit(TWO_T, Y),
             ValueError, r"^y has 20 trajectories but t has 2 rows"),
    BadInput("trajectory-counts-disagree", lambda e: e.fit(TWO_T, np.stack([Y, Y, Y])),
             ValueError, r"^y has 3 trajectories but t has 2 rows"),
    BadInput("shared-grid-lengths-disagree", lambda e: e.fit(T, np.stack([Y[:-1], Y[:-1]])),
             ValueError, r"^y\[0\] has 19 time points but the matching t has 20"),
    BadInput("2d-t-duplicate-in-a-row",
             lambda e: e.fit(np.stack([T, DUPLICATED_T]), np.stack([Y, Y])),
             ValueError,
             r"^t\[1\] has duplicate time"),
    BadInput("ragged-counts-disagree", lambda e: e.fit([T, T[:10]], [Y]),
             ValueError, r"^y has 1 trajectories but t has 2"),
    BadInput("ragged-t-array-y", lambda e: e.fit([T, T[:10]], Y),
             TypeError, r"^y must be a list of arrays when t is a list"),
    BadInput("ragged-states-disagree", lambda e: e.fit([T, T[:10]], [Y, Y[:10, :1]]),
             ValueError, r"^y: all trajectories need the same number of states, got \{1, 2\}"),
    BadInput("ragged-lengths-disagree", lambda e: e.fit([T, T[:10]], [Y, Y[:9]]),
             ValueError, r"^y\[1\] has 9 time points but the matching t has 10"),
    BadInput("ragged-one-point", lambda e: e.fit([T, T[:1]], [Y, Y[:1]]),
             ValueError, r"^t\[1\] needs at least 2 time point\(s\) per trajectory, got 1"),
    BadInput("ragged-nan-in-t", lambda e: e.fit([T, with_nan(T[:10], (2,))], [Y, Y[:10]]),
             ValueError, r"^t\[1\] must be finite"),
    BadInput("y-too-large", lambda e: e.fit(T, Y * 1e200),
             ValueError, r"^y has values of magnitude up to 1\.69e\+200; beyond 1e\+150"),
    BadInput("sparse-y", lambda e: e.fit(T, scipy.sparse.csr_matrix(Y)),
             TypeError, r"^y is a sparse matrix"),
    BadInput("warm-start-with-other-states",
             lambda e: e.set_params(warm_start=True).fit(T, Y[:, :1]),
             ValueError,
             r"y has 1 states but the model being continued \(warm_start=True\) was fitted on 2"),
]

PARAMETER = r"^The '{}' parameter of {} must be {}.*Got {} instead"

COMMON_HYPER_PARAMETERS = [
    BadInput("negative-width",
             refit(hidden_layer_sizes=(16, -3)),
             ValueError,
             r"^hidden_layer_sizes must be a tuple of positive integers, got \(16, -3\)"),
    BadInput("zero-width", refit(hidden_layer_sizes=(0,)),
             ValueError, r"^hidden_layer_sizes must be a tuple of positive integers, got \(0,\)"),
    BadInput("fractional-width",
             refit(hidden_layer_sizes=(2.5,)),
             ValueError,
             r"^hidden_layer_sizes must be a tuple of positive integers, got \(2\.5,\)"),
    BadInput("width-not-a-tuple", refit(hidden_layer_sizes=8),
             ValueError, PARAMETER.format("hidden_layer_sizes", ".*", "an array-like", "8")),
    BadInput("unknown-solver", refit(solver="rk45"),
             ValueError, PARAMETER.format("solver", ".*", "a str among .*dopri5", "'rk45'")),
    BadInput("unknown-activation", refit(activation="swish"),
             ValueError, PARAMETER.format("activation", ".*", "a str among .*tanh", "'swish'")),
    BadInput("unknown-device", refit(device="tpu"),
             ValueError, r"^device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    BadInput("missing-cuda-device", refit(device="cuda:99"), ValueError, r"^device='cuda:99'"),
    BadInput("device-not-a-string", refit(device=0),
             TypeError, PARAMETER.format("device", ".*", "an instance of 'str'", "0")),
    BadInput("negative-rtol",
             refit(solver__rtol=-1e-3),
             ValueError,
             PARAMETER.format("solver.rtol", ".*", r"a float in the range \(0\.0, inf\)",
                              "-0.001")),
    BadInput("negative-atol",
             refit(solver__atol=-1.0),
             ValueError,
             PARAMETER.format("solver.atol", ".*", r"a float in the range \(0\.0, inf\)", "-1.0")),
    BadInput("nan-rtol", refit(solver__rtol=math.nan),
             ValueError, PARAMETER.format("solver.rtol", ".*", "a float", "nan")),
    BadInput("negative-max_iter",
             refit(max_iter=-1),
             ValueError,
             PARAMETER.format("max_iter", ".*", r"an int in the range \[1, 1000000000\]", "-1")),
    BadInput("fractional-max_iter", refit(max_iter=2.5),
             ValueError, PARAMETER.format("max_iter", ".*", "an int", "2.5")),
    BadInput("negative-augment_dim", refit(augment_dim=-1),
             ValueError, PARAMETER.format("augment_dim", ".*", "an int", "-1")),
    BadInput("negative-step_size", refit(solver__step_size=-0.1),
             ValueError, PARAMETER.format("solver.step_size", ".*", "a float", "-0.1")),
    BadInput("zero-max_num_steps", refit(solver__max_num_steps=0),
             ValueError, PARAMETER.format("solver.max_num_steps", ".*", "an int", "0")),
    BadInput("unknown-smoothing", refit(collocation__smoothing="lots"),
             ValueError,
             PARAMETER.format("collocation.smoothing", ".*", r"a str among \{'auto'\}", "'lots'")),
    BadInput("negative-smoothing", refit(collocation__smoothing=-1.0),
             ValueError, PARAMETER.format("collocation.smoothing", ".*", ".*float", "-1.0")),
    BadInput("one-point-segments", refit(shooting=MultipleShooting(segment_length=1)),
             ValueError, PARAMETER.format("shooting.segment_length", ".*", "an int", "1")),
    BadInput("callback-not-callable", refit(callbacks=[1]),
             TypeError, r"^callbacks must be callables, got 1"),
    BadInput("feature_map-not-callable", refit(feature_map=3),
             ValueError, PARAMETER.format("feature_map", ".*", "a callable", "3")),
    BadInput("unknown-dtype", refit(dtype="float16"),
             ValueError, PARAMETER.format("dtype", ".*", "a str among", "'float16'")),
    BadInput("bad-random_state", refit(random_state="seed"),
             ValueError, PARAMETER.format("random_state", ".*", "an int", "'seed'")),
    BadInput("no-stage",
             refit(collocation=False, shooting=False, polish=False),
             ValueError,
             r"^At least one training stage must be on: collocation, shooting or polish"),
    BadInput("unknown-on_interrupt", refit(on_interrupt="ignore"),
             ValueError, PARAMETER.format("on_interrupt", ".*", "a str among", "'ignore'")),
]

COMMON_PREDICTION = [
    BadInput("predict-before-fit", lambda e: clone(e).predict(T),
             NotFittedError, r"instance is not fitted yet"),
    BadInput("score-before-fit", lambda e: clone(e).score(T, Y),
             NotFittedError, r"instance is not fitted yet"),
    BadInput("vector_field-before-fit", lambda e: clone(e).vector_field(Y),
             NotFittedError, r"instance is not fitted yet"),
    BadInput("predict-t-is-None", lambda e: e.predict(None),
             TypeError, r"^t must be an array of real numbers, got None"),
    BadInput("predict-nan-in-t", lambda e: e.predict(with_nan(T, (0,))),
             ValueError, r"^t must be finite"),
    BadInput("predict-duplicate-times", lambda e: e.predict(DUPLICATED_T),
             ValueError, r"^t has duplicate time"),
    BadInput("predict-empty-t", lambda e: e.predict(np.array([])),
             ValueError, r"^t needs at least 1 time point\(s\) per trajectory, got 0"),
    BadInput("predict-string-t", lambda e: e.predict(np.array(["0", "1"])),
             TypeError, r"^t must hold real numbers, got dtype <U1"),
    BadInput("predict-scalar-t", lambda e: e.predict(1.0),
             ValueError, r"^t must be 1-D \(n_times,\).*got shape \(\)"),
    BadInput("predict-2d-t-without-y0",
             lambda e: e.predict(TWO_T),
             ValueError,
             r"^t describes 2 trajectories but the fitted initial states give 1; pass one"),
    BadInput("predict-y0-of-wrong-size",
             lambda e: e.predict(T, y0=[1.0, 2.0, 3.0]),
             ValueError,
             r"^y0 must have shape \(n_samples, 2\) or \(2,\) .*got shape \(3,\)"),
    BadInput("predict-y0-nan", lambda e: e.predict(T, y0=[math.nan, 1.0]),
             ValueError, r"^y0 must be finite: it contains NaN or inf"),
    BadInput("predict-y0-inf", lambda e: e.predict(T, y0=[math.inf, 1.0]),
             ValueError, r"^y0 must be finite"),
    BadInput("predict-y0-strings", lambda e: e.predict(T, y0=["a", "b"]),
             TypeError, r"^y0 must hold real numbers, got dtype <U1"),
    BadInput("predict-y0-3d", lambda e: e.predict(T, y0=np.ones((1, 1, 2))),
             ValueError, r"^y0 must have shape .*got shape \(1, 1, 2\)"),
    BadInput("predict-y0-count-disagrees",
             lambda e: e.predict(np.stack([T, T, T]), y0=np.ones((2, 2))),
             ValueError,
             r"^t describes 3 trajectories but y0 give 2"),
    BadInput("predict-y0-empty", lambda e: e.predict(T, y0=np.empty((0, 2))),
             ValueError, r"^y0 is empty"),
    BadInput("predict-y0-complex", lambda e: e.predict(T, y0=[1j, 1.0]),
             ValueError, r"^y0 must hold real numbers, got complex"),
    BadInput("score-one-state-too-few", lambda e: e.score(T, Y[:, 0]),
             ValueError, r"^y has 1 states but the model was fitted on 2"),
    BadInput("score-one-state-too-many", lambda e: e.score(T, np.column_stack([Y, Y[:, 0]])),
             ValueError, r"^y has 3 states but the model was fitted on 2"),
    BadInput("score-t-shorter-than-y", lambda e: e.score(T[:-1], Y),
             ValueError, r"^y has 20 time points but the matching t has 19"),
    BadInput("score-inf-in-y", lambda e: e.score(T, with_nan(Y, (0, 0), math.inf)),
             ValueError, r"^y contains inf"),
    BadInput("score-sample_weight-of-wrong-shape",
             lambda e: e.score(T, Y, sample_weight=np.ones(3)),
             ValueError,
             r"^sample_weight must have shape \(20,\), one weight per sample.*got shape \(3,\)"),
    BadInput("score-sample_weight-nan", lambda e: e.score(T, Y, sample_weight=np.full(20, np.nan)),
             ValueError, r"^sample_weight must be finite"),
    BadInput("score-sample_weight-negative", lambda e: e.score(T, Y, sample_weight=-np.ones(20)),
             ValueError, r"^sample_weight must be non-negative, got -1\.0"),
    BadInput("score-sample_weight-all-zero", lambda e: e.score(T, Y, sample_weight=np.zeros(20)),
             ValueError, r"^sample_weight must have a positive entry, got all zeros"),
    BadInput("score-sample_weight-strings", lambda e: e.score(T, Y, sample_weight=["a"] * 20),
             TypeError, r"^sample_weight must hold real numbers"),
    BadInput("vector_field-wrong-number-of-states", lambda e: e.vector_field(np.ones((5, 3))),
             ValueError, r"^y must have shape \(n_samples, 2\) or \(2,\).*got shape \(5, 3\)"),
    BadInput("vector_field-nan", lambda e: e.vector_field([math.nan, 1.0]),
             ValueError, r"^y must be finite"),
    BadInput("vector_field-None", lambda e: e.vector_field(None),
             TypeError, r"^y must be an array of real numbers, got None"),
    BadInput("vector_field-string", lambda e: e.vector_field("ab"),
             TypeError, r"^y must be an array of real numbers, got a string 'ab'"),
    BadInput("vector_field-3d", lambda e: e.vector_field(np.ones((2, 2, 2))),
             ValueError, r"^y must have shape .*got shape \(2, 2, 2\)"),
    BadInput("vector_field-empty", lambda e: e.vector_field(np.empty((0, 2))),
             ValueError, r"^y is empty"),
    BadInput("vector_field-objects", lambda e: e.vector_field(np.array([[object(), 1]])),
             TypeError, r"^y must hold real numbers, got values of type"),
]

NEURAL_ONLY = [
    BadInput("feature_map-raises",
             refit(feature_map=feature_map_that_raises),
             ValueError,
             r"^feature_map raised RuntimeError: .* physical states of shape \(20, 2\); it"),
    BadInput("feature_map-wrong-shape",
             refit(feature_map=feature_map_of_wrong_shape),
             ValueError,
             r"^feature_map must map states .* shape \(20, 2\) it returned shape \(\)"),
    BadInput("feature_map-returns-numpy", refit(feature_map=feature_map_returning_numpy),
             TypeError, r"^feature_map must return a torch\.Tensor, got ndarray"),
    BadInput("feature_map-non-finite",
             refit(feature_map=feature_map_with_nan),
             ValueError,
             r"^feature_map returned non-finite values \(NaN or inf\), e\.g\. at the state"),
]

UNIVERSAL_ONLY = [
    BadInput("known-not-callable", refit(known=3),
             ValueError, PARAMETER.format("known", "UniversalODERegressor", "a callable", "3")),
    BadInput("params-not-a-mapping", refit(params=[1.0]),
             TypeError, PARAMETER.format("params", ".*", ".*Mapping", r"\[1\.0\]")),
    BadInput("params-nan", refit(params={"k": math.nan}),
             ValueError, r"^params\['k'\] must be a finite real number, got nan"),
    BadInput("params-string-value", refit(params={"k": "big"}),
             TypeError, r"^params\['k'\] must be a real number, got 'big'"),
    BadInput("params-integer-key", refit(params={1: 1.0}),
             TypeError, r"^params keys must be non-empty strings, got 1"),
    BadInput("params-array-value", refit(params={"k": np.ones(2)}),
             TypeError, r"^params\['k'\] must be a real number, got array"),
    BadInput("params-missing-a-name-known-uses",
             refit(params={"q": 1.0}),
             ValueError,
             r"^known\(t, y, p\) raised KeyError: 'k' .* p with keys \['q'\]"),
    BadInput("params-also-fixed", refit(fixed_params={"k": 1.0}),
             ValueError, r"^\['k'\] appear in both params and fixed_params"),
    BadInput("fixed_params-inf", refit(fixed_params={"c": math.inf}),
             ValueError, r"^fixed_params\['c'\] must be a finite real number, got inf"),
    BadInput("known-returns-wrong-shape", refit(known=known_of_wrong_shape),
             ValueError, r"^known\(t, y, p\) must return the shape of y, .*\(1, 2\).*got \(1, 1\)"),
    BadInput("known-returns-numpy", refit(known=known_returning_numpy),
             TypeError, r"^known\(t, y, p\) must return a torch\.Tensor, got ndarray"),
    BadInput("known-returns-nan", refit(known=known_returning_nan),
             ValueError, r"^known\(t, y, p\) returned non-finite values"),
    BadInput("known-of-two-states-on-three", lambda e: e.fit(T, np.column_stack([Y, Y[:, 0]])),
             ValueError, r"^known\(t, y, p\) (raised|must return the shape of y)"),
    BadInput("network_outputs-out-of-range", refit(network_outputs=[5]),
             ValueError, r"^network_outputs index 5 is out of range for data with 2 state\(s\)"),
    BadInput("network_outputs-fractional", refit(network_outputs=[0.5]),
             TypeError, r"^network_outputs must hold integer state indices, got 0\.5"),
    BadInput("network_outputs-repeated", refit(network_outputs=[0, 0]),
             ValueError, r"^network_outputs has repeated state indices"),
    BadInput("network_outputs-string", refit(network_outputs="ab"),
             ValueError, PARAMETER.format("network_outputs", ".*", "an array-like", "'ab'")),
    BadInput("network_inputs-negative", refit(network_inputs=[-1]),
             ValueError, r"^network_inputs index -1 is out of range"),
    BadInput("param_constraints-unknown-kind", refit(param_constraints={"k": "negative"}),
             ValueError, r"^param_constraints\['k'\] must be 'positive' or a \(low, high\) pair"),
    BadInput("param_constraints-unknown-name", refit(param_constraints={"z": "positive"}),
             ValueError, r"^param_constraints names 'z', which is not a learned parameter"),
    BadInput("param_constraints-empty-interval", refit(param_constraints={"k": (5.0, 1.0)}),
             ValueError, r"^param_constraints\['k'\] = \(5\.0, 1\.0\) must be finite with low"),
    BadInput("params-outside-their-interval", refit(param_constraints={"k": (0.0, 1.0)}),
             ValueError, r"^params\['k'\] = 3\.0 must lie strictly inside its bounds"),
    BadInput("positive-params-starting-negative",
             refit(params={"k": -1.0}, param_constraints="positive"),
             ValueError,
             r"^params\['k'\] = -1\.0 must be > 0 to be constrained 'positive'"),
    BadInput("negative-network_penalty", refit(network_penalty=-1.0),
             ValueError, PARAMETER.format("network_penalty", ".*", ".*float", "-1.0")),
    BadInput("inf-network_penalty", refit(network_penalty=math.inf),
             ValueError, PARAMETER.format("network_penalty", ".*", ".*float", "inf")),
    BadInput("nan-network_weight_decay", refit(network_weight_decay=math.nan),
             ValueError, PARAMETER.format("network_weight_decay", ".*", ".*float", "nan")),
    BadInput("inf-network_weight_decay", refit(network_weight_decay=math.inf),
             ValueError, PARAMETER.format("network_weight_decay", ".*", ".*float", "inf")),
    BadInput("params-without-known", refit(known=None),
             ValueError, r"^params and fixed_params are passed to known, but known is None"),
    BadInput("nothing-to-learn",
             refit(params=None, fixed_params={"k": 4.0}),
             ValueError,
             r"^Nothing to learn: with hidden_layer_sizes=\(\) give learned params to known"),
    BadInput("known_term-wrong-number-of-states", lambda e: e.known_term(np.ones((3, 5))),
             ValueError, r"^y must have shape \(n_samples, 2\)"),
    BadInput("known_term-t-of-wrong-length",
             lambda e: e.known_term(np.ones((3, 2)), t=np.ones(4)),
             ValueError,
             r"^t must be a number or have shape \(3,\), one time per state, got shape \(4,\)"),
    BadInput("known_term-t-nan", lambda e: e.known_term(np.ones((3, 2)), t=math.nan),
             ValueError, r"^t must be finite"),
    BadInput("network_term-before-fit", lambda e: clone(e).network_term(np.ones((3, 2))),
             NotFittedError, r"instance is not fitted yet"),
    BadInput("discover_equations-without-network", lambda e: e.discover_equations(),
             ValueError, r"has no network \(hidden_layer_sizes=\(\)\)"),
]
# fmt: on

#: Integer settings and (lowest, highest) allowed value: the highest is where torch and
#: torchdiffeq stop coping (int32 counts) or memory would run out (layer sizes).
INTEGER_LIMITS = {
    "solver.max_num_steps": (1, MAX_ITERATIONS),
    "max_iter": (1, MAX_ITERATIONS),
    "polish.max_iter": (1, MAX_ITERATIONS),
    "shooting.batch_size": (1, MAX_ITERATIONS),
    "shooting.n_iter_no_change": (1, MAX_ITERATIONS),
    "collocation.n_iter_no_change": (1, MAX_ITERATIONS),
    "collocation.max_iter": (1, MAX_ITERATIONS),
    "shooting.segment_length": (2, MAX_ITERATIONS),
    "augment_dim": (0, MAX_AUGMENT_DIM),
    "verbose": (0, MAX_ITERATIONS),
}
#: Real settings: each must be finite (NaN and inf are never a tolerance or a rate).
REAL_SETTINGS = [
    "solver.rtol",
    "solver.atol",
    "solver.step_size",
    "collocation.learning_rate",
    "shooting.learning_rate",
    "shooting.continuity_weight",
    "collocation.tol",
    "shooting.tol",
    "collocation.smoothing",
]


def setting(dotted: str, value: Any) -> dict[str, Any]:
    """Constructor arguments that give the setting ``dotted`` (``"shooting.tol"``: a
    setting of ``shooting=MultipleShooting(tol=...)``; ``"max_iter"``: an argument)."""
    argument, _, name = dotted.partition(".")
    if not name:
        return {argument: value}
    return {argument: SETTINGS_CLASSES[argument](**{name: value})}


LIMITS = [
    *(
        BadInput(
            f"{name}-beyond-its-cap",
            refit(**setting(name, high + 1)),
            ValueError,
            PARAMETER.format(
                re.escape(name), ".*", rf"an int in the range \[{low}, {high}\]", high + 1
            ),
        )
        for name, (low, high) in INTEGER_LIMITS.items()
    ),
    BadInput(
        "max_num_steps-that-overflowed-torchdiffeq",
        refit(solver__max_num_steps=10**30),
        ValueError,
        PARAMETER.format("solver.max_num_steps", ".*", "an int in the range", 10**30),
    ),
    *(
        BadInput(
            f"{name}-{value}",
            refit(**setting(name, value)),
            ValueError,
            PARAMETER.format(re.escape(name), ".*", ".*float", value),
        )
        for name in REAL_SETTINGS
        for value in (math.nan, math.inf, -math.inf)
    ),
    BadInput(
        "layer-wider-than-the-cap",
        refit(hidden_layer_sizes=(8, MAX_LAYER_WIDTH + 1)),
        ValueError,
        rf"^hidden_layer_sizes holds a layer of width {MAX_LAYER_WIDTH + 1}; the widest",
    ),
    BadInput(
        "more-layers-than-the-cap",
        refit(hidden_layer_sizes=(2,) * (MAX_HIDDEN_LAYERS + 1)),
        ValueError,
        rf"^hidden_layer_sizes has {MAX_HIDDEN_LAYERS + 1} layers; at most",
    ),
]

NEURAL_CASES = COMMON_FIT_DATA + COMMON_HYPER_PARAMETERS + LIMITS + COMMON_PREDICTION + NEURAL_ONLY
UNIVERSAL_CASES = (
    [case for case in COMMON_FIT_DATA if case.name != "warm-start-with-other-states"]
    + COMMON_HYPER_PARAMETERS
    + LIMITS
    + COMMON_PREDICTION
    + UNIVERSAL_ONLY
)


def test_the_battery_is_large_and_its_cases_distinct() -> None:
    for cases in (NEURAL_CASES, UNIVERSAL_CASES):
        names = [case.name for case in cases]
        assert len(names) == len(set(names))
    assert len(NEURAL_CASES) >= 40
    assert len(UNIVERSAL_CASES) >= 40


def check_bad_input(estimator: Any, case: BadInput) -> None:
    """Throw ``case`` at a copy of ``estimator``; the copy must come out unharmed."""
    target = copy.deepcopy(estimator)
    params = target.get_params()
    before = fitted_state(target)
    predicted = target.predict(T)
    with pytest.raises(case.error, match=case.match) as error:
        case.call(target)
    assert raised_by_our_validation(error), error.traceback[-1]
    assert_same_fitted_state(target, before)
    target.set_params(**params)
    np.testing.assert_array_equal(target.predict(T), predicted)


@pytest.mark.parametrize("case", NEURAL_CASES, ids=lambda case: case.name)
def test_neural_ode_rejects_bad_input_clearly_and_stays_intact(
    fitted_node: NeuralODERegressor, case: BadInput
) -> None:
    check_bad_input(fitted_node, case)


@pytest.mark.parametrize("case", UNIVERSAL_CASES, ids=lambda case: case.name)
def test_universal_ode_rejects_bad_input_clearly_and_stays_intact(
    fitted_ude: UniversalODERegressor, case: BadInput
) -> None:
    check_bad_input(fitted_ude, case)
