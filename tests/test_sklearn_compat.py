"""scikit-learn conventions: the library's own estimator checks, and the same properties
checked on real trajectories where a check cannot apply because X is time.

The estimators declare ``input_tags.one_d_array``: the checks then pass ``X[:, 0]`` as
the time points of one trajectory and ``y`` as its observed state(s), which is our API,
so most checks run for real. The rest are listed in :data:`EXPECTED_FAILED_CHECKS`; each
is strict: a check that starts passing fails this suite until it leaves the list, and
one that fails in another way (another exception, message, or place) fails it too.
"""

from __future__ import annotations

import copy
import functools
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import estimator_checks_generator
from sklearn.utils.validation import check_is_fitted
from sklearn_helpers import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    cube,
    decay,
    fast_neural,
    fast_universal,
    one_torch_thread,
    oscillator,
    oscillator_family,
    spring,
)

from skneuralode import MultipleShooting, NeuralODERegressor, UniversalODERegressor


@dataclass(frozen=True)
class ExpectedFailure:
    """How a scikit-learn check fails when X is time, matched exactly enough that any
    other failure of the same check (a bug of ours) is reported, not expected."""

    reason: str  # why the check cannot pass when X is time
    error: type[Exception]  # the exception it ends with
    match: str  # a pattern its message contains
    raised_in: str  # a fragment of the path of the file whose frame raised it
    cause: str | None = None  # a pattern of the message of the exception behind it


_INDEXES_1D_X = "the check indexes X[:, 0] after making X 1-D (one trajectory's times)"
_CHECK_CODE = "sklearn/utils/"
_OUR_CODE = "skneuralode/"
_INDEXING = ExpectedFailure(
    _INDEXES_1D_X,
    IndexError,
    r"^too many indices for array: array is 1-dimensional, but 2 were indexed$",
    _CHECK_CODE + "estimator_checks.py",
)


def _counts_states(reason: str) -> ExpectedFailure:
    return ExpectedFailure(
        reason, IndexError, r"^tuple index out of range$", _CHECK_CODE + "estimator_checks.py"
    )


def _duplicate_times(reason: str, time: str) -> ExpectedFailure:
    return ExpectedFailure(
        reason, ValueError, rf"^t has duplicate time {time} within one trajectory", _OUR_CODE
    )


# check name -> how it fails, and why it cannot pass when X is time. The same properties
# are tested on trajectories below (see the "analogue" tests).
EXPECTED_FAILED_CHECKS: dict[str, ExpectedFailure] = {
    "check_fit1d": ExpectedFailure(
        "1-D X is valid: the time points of one trajectory",
        AssertionError,
        r"^Did not raise: \[<class 'ValueError'>\]",
        _CHECK_CODE,
    ),
    "check_fit2d_1feature": _INDEXING,
    "check_fit2d_1sample": _INDEXING,
    "check_fit2d_predict1d": _INDEXING,
    "check_dont_overwrite_parameters": _INDEXING,
    "check_dict_unchanged": _INDEXING,
    "check_dtype_object": _INDEXING,
    "check_f_contiguous_array_estimator": _INDEXING,
    "check_methods_sample_order_invariance": _INDEXING,
    "check_methods_subset_invariance": _INDEXING,
    "check_regressors_no_decision_function": _INDEXING,
    "check_n_features_in": _counts_states(
        "n_features_in_ counts states; the check wants X.shape[1] of 1-D X"
    ),
    "check_n_features_in_after_fitting": _counts_states(
        "n_features_in_ counts states, X's columns are times"
    ),
    "check_estimators_dtypes": _duplicate_times(
        "X cast to int has repeated values: duplicate times are invalid", r"0\.0"
    ),
    "check_positive_only_tag_during_fit": ExpectedFailure(
        "iris X[:, 0] as time has duplicate times (invalid)",
        AssertionError,
        "raised ValueError unexpectedly. This happens when passing negative input values",
        _CHECK_CODE + "estimator_checks.py",
        cause=r"^t has duplicate time .* within one trajectory",
    ),
    "check_non_transformer_estimators_n_iter": _duplicate_times(
        "iris X[:, 0] as time has duplicate times", r"4\.4"
    ),
    "check_estimators_empty_data_messages": ExpectedFailure(
        "X of shape (12, 0) is 12 trajectories without time points; the error speaks of "
        "time points, not features",
        AssertionError,
        r"(?s)should contain one of the following patterns:.*"
        r"Got t\[0\] needs at least 2 time point\(s\) per trajectory, got 0",
        _CHECK_CODE,
    ),
    "check_estimator_sparse_array": ExpectedFailure(
        "the check cannot make a sparse array of 1-D X (time)",
        ValueError,
        r"^Cannot convert a 1d sparse array to lil format$",
        "scipy/sparse/",
    ),
    "check_regressor_data_not_an_array": ExpectedFailure(
        "1-D X as an (n, 1) DataFrame is n trajectories of one time point each",
        ValueError,
        r"^t\[0\] needs at least 2 time point\(s\) per trajectory, got 1",
        _OUR_CODE,
    ),
}


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    """``expected_failed_checks`` for scikit-learn's check_estimator and friends."""
    return {name: expected.reason for name, expected in EXPECTED_FAILED_CHECKS.items()}


CHECKED_ESTIMATORS = [
    NeuralODERegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0, device="cpu"),
    UniversalODERegressor(
        known=decay,
        params={"k": 0.5},
        hidden_layer_sizes=(4,),
        max_iter=5,
        shooting=False,  # the stages are the same code for both estimators: checked above
        polish=False,
        random_state=0,
        device="cpu",
    ),
]


def _check_name(check: Any) -> str:
    function = check.func if isinstance(check, functools.partial) else check
    return function.__name__


def _all_checks() -> list[Any]:
    """One pytest parameter per (estimator, check), with stable ids (the estimators'
    reprs hold function addresses, which change from run to run)."""
    return [
        pytest.param(checked, check, id=f"{type(checked).__name__}-{_check_name(check)}")
        for estimator in CHECKED_ESTIMATORS
        for checked, check in estimator_checks_generator(estimator)
    ]


@pytest.mark.parametrize(("estimator", "check"), _all_checks())
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    """scikit-learn's own checks (what ``parametrize_with_checks`` runs), strict about
    the expected failures."""
    expected = EXPECTED_FAILED_CHECKS.get(_check_name(check))
    if expected is None:
        check(estimator)
        return
    # Strict: a check that passes must leave the list, one that fails otherwise is a bug.
    with pytest.raises(expected.error, match=expected.match) as raised:
        check(estimator)
    raising_file = Path(str(raised.traceback[-1].path)).as_posix()
    assert expected.raised_in in raising_file, raised.getrepr(style="short")
    if expected.cause is not None:
        assert re.search(expected.cause, str(raised.value.__cause__)), raised.value.__cause__
    pytest.xfail(expected.reason)


def test_expected_failures_are_few_and_explained() -> None:
    assert len(EXPECTED_FAILED_CHECKS) <= 19
    assert all(expected.reason.strip() for expected in EXPECTED_FAILED_CHECKS.values())


# ------------------------------------------------------------------------------- tags
@pytest.mark.parametrize("estimator", CHECKED_ESTIMATORS, ids=lambda e: type(e).__name__)
def test_tags_describe_time_as_x(estimator: Any) -> None:
    tags = get_tags(estimator)
    assert tags.estimator_type == "regressor"
    assert tags.input_tags.one_d_array and tags.input_tags.two_d_array
    assert not tags.input_tags.sparse and not tags.input_tags.allow_nan
    assert tags.target_tags.required and tags.target_tags.multi_output
    assert tags.non_deterministic is False  # on the CPU a seeded fit is reproducible


# -------------------------------------------------------- constructor and parameters
def test_init_only_stores_and_fit_validates() -> None:
    estimator = NeuralODERegressor(max_iter=-3, activation="nope", device="tpu")
    assert (estimator.max_iter, estimator.activation) == (-3, "nope")  # stored as given
    t, y = oscillator()
    for name, bad in [
        ("max_iter", -3),
        ("activation", "nope"),
        ("hidden_layer_sizes", (0,)),
        ("shooting__segment_growth", "sometimes"),
    ]:
        with pytest.raises((InvalidParameterError, ValueError), match=name.replace("__", ".")):
            fast_neural(shooting=True).set_params(**{name: bad}).fit(t, y)
    settings = MultipleShooting(segment_growth="sometimes")
    assert fast_neural(shooting=settings).shooting.segment_growth == "sometimes"  # stored
    with pytest.raises(ValueError, match="device"):
        fast_neural(device="tpu").fit(t, y)


def test_clone_keeps_known_feature_map_and_copies_mappings() -> None:
    estimator = fast_universal(feature_map=cube, fixed_params={"damping": 0.1})
    twin = clone(estimator)
    assert twin.known is spring and twin.feature_map is cube
    assert twin.params == {"omega2": 3.0} and twin.params is not estimator.params
    assert twin.get_params().keys() == estimator.get_params().keys()
    twin.set_params(known=decay, params={"k": 1.0}, feature_map=None)
    assert (twin.known, twin.params, twin.feature_map) == (decay, {"k": 1.0}, None)
    assert estimator.known is spring  # the original is untouched


def test_nested_parameters_through_pipeline_and_target_transformer() -> None:
    pipeline = Pipeline([("ode", fast_universal())])
    wrapped = TransformedTargetRegressor(regressor=fast_neural())
    pipeline.set_params(ode__known=decay, ode__params={"k": 2.0}, ode__max_iter=7)
    wrapped.set_params(regressor__feature_map=cube, regressor__hidden_layer_sizes=(3,))
    ode = pipeline.named_steps["ode"]
    assert (ode.known, ode.params, ode.max_iter) == (decay, {"k": 2.0}, 7)
    assert pipeline.get_params()["ode__known"] is decay
    assert wrapped.get_params()["regressor__feature_map"] is cube
    assert clone(pipeline).get_params()["ode__params"] == {"k": 2.0}


# ------------------------------- analogues, on trajectories, of the checks listed above
@pytest.fixture(params=["neural", "universal"])
def make(request: pytest.FixtureRequest) -> Any:
    return fast_neural if request.param == "neural" else fast_universal


def test_fit_returns_self_and_leaves_parameters_and_dict_alone(make: Any) -> None:
    """check_dont_overwrite_parameters, check_dict_unchanged, check_fit_check_is_fitted."""
    t, y = oscillator()
    estimator = make()
    before = copy.deepcopy(estimator.get_params())
    with pytest.raises(NotFittedError):
        estimator.predict(t)
    assert estimator.fit(t, y) is estimator
    check_is_fitted(estimator)
    after = estimator.get_params()
    assert pickle.dumps(after) == pickle.dumps(before)
    public_new = {k for k in vars(estimator) if k not in before and not k.startswith("_")}
    assert all(name.endswith("_") for name in public_new)
    state = pickle.dumps(
        {k: v for k, v in vars(estimator).items() if k not in ("module_", "callbacks")}
    )
    estimator.predict(t)
    estimator.score(t, y)
    estimator.vector_field(y[:3])
    assert (
        pickle.dumps(
            {k: v for k, v in vars(estimator).items() if k not in ("module_", "callbacks")}
        )
        == state
    )


def test_n_features_in_counts_states_and_n_iter_is_set(make: Any) -> None:
    """check_n_features_in(_after_fitting), check_non_transformer_estimators_n_iter."""
    t, y = oscillator()
    estimator = make().fit(t, y)
    assert estimator.n_features_in_ == 2
    assert 1 <= estimator.n_iter_ == len(estimator.history_)
    with pytest.raises(ValueError, match="states"):
        estimator.score(t, np.c_[y, y])


def test_seeded_fit_is_idempotent_and_invariant_to_time_order(make: Any) -> None:
    """check_fit_idempotent and check_methods_sample_order_invariance for one trajectory."""
    t, y = oscillator()
    reference = make().fit(t, y)
    permutation = np.random.default_rng(1).permutation(len(t))
    shuffled = make().fit(t[permutation], y[permutation])
    again = reference.fit(t, y).predict(t)
    np.testing.assert_array_equal(shuffled.predict(t), again)
    np.testing.assert_array_equal(
        reference.predict(t[permutation]), reference.predict(t)[permutation]
    )


def test_predictions_invariant_to_trajectory_order_and_subsets(make: Any) -> None:
    """check_methods_sample_order_invariance / _subset_invariance across trajectories."""
    grids, states = oscillator_family(n_traj=4)
    estimator = make().fit(grids, states)
    starts = states[:, 0]
    full = estimator.predict(grids, y0=starts)
    order = np.array([2, 0, 3, 1])
    # One adaptive step size serves a whole batch, so a different batch agrees to the
    # solver's tolerance (rtol=1e-6), not to the bit.
    np.testing.assert_allclose(
        estimator.predict(grids[order], y0=starts[order]), full[order], atol=1e-5
    )
    np.testing.assert_allclose(estimator.predict(grids[1:3], y0=starts[1:3]), full[1:3], atol=1e-5)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda t, y: (t.astype(np.float32), y.astype(np.float32)), id="float32"),
        pytest.param(lambda t, y: (t.tolist(), y.tolist()), id="lists"),
        pytest.param(lambda t, y: (t, np.asfortranarray(y)), id="fortran"),
        pytest.param(lambda t, y: (t.astype(object), y.astype(object)), id="object"),
        pytest.param("readonly", id="readonly"),
        pytest.param("pandas", id="pandas"),
    ],
)
def test_array_likes_and_dtypes_give_the_same_fit(convert: Any) -> None:
    """check_estimators_dtypes, check_regressor_data_not_an_array, check_dtype_object,
    check_f_contiguous_array_estimator, check_readonly_memmap_input on trajectories."""
    t, y = oscillator()
    t = np.round(t * 10.0) / 10.0  # exactly representable in float32 too
    reference = fast_neural().fit(t, y).predict(t)
    if convert == "readonly":
        t_in, y_in = t.copy(), y.copy()
        t_in.flags.writeable = y_in.flags.writeable = False
    elif convert == "pandas":
        pandas = pytest.importorskip("pandas")
        t_in, y_in = pandas.Series(t), pandas.DataFrame(y, columns=["x", "v"])
    else:
        t_in, y_in = convert(t, y)
    predicted = fast_neural().fit(t_in, y_in).predict(t_in)
    tolerance = 1e-3 if convert != "pandas" and np.asarray(t_in).dtype == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(predicted, dtype=float), reference, atol=tolerance)


def test_integer_times_are_accepted() -> None:
    t = np.arange(12)
    y = np.exp(-0.3 * t)
    estimator = fast_neural().fit(t, y)
    assert estimator.predict(t).shape == (12,)


@pytest.mark.parametrize(
    ("t", "y", "message"),
    [
        (np.array([0.0, 1.0, 1.0]), np.ones(3), "duplicate time"),
        (np.zeros((5, 1)), np.ones((5, 1)), "at least 2 time point"),
        (np.array([0.0, np.nan, 2.0]), np.ones(3), "NaN or inf"),
        (np.array([0.0, 1.0]) + 1j, np.ones(2), "Complex data not supported"),
        (np.array([0.0, 1.0]), None, "requires y to be passed"),
    ],
)
def test_bad_time_input_names_the_problem(t: Any, y: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fast_neural().fit(t, y)


def test_sparse_input_is_refused_clearly() -> None:
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse input is not supported"):
        fast_neural().fit(sparse.csr_matrix(np.eye(3)), np.ones((3, 3)))


def test_fitted_on_cpu_is_reproducible_to_the_bit() -> None:
    t, y = oscillator()
    first = fast_universal().fit(t, y)
    second = fast_universal().fit(t, y)
    assert first.params_ == second.params_
    for a, b in zip(
        first.module_.state_dict().values(), second.module_.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
