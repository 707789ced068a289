"""Promise 5: the same ``random_state`` gives bit-identical results on the CPU: across
fits, across processes (whatever the number of torch threads) and in model selection
whatever ``n_jobs``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold
from sklearn_helpers import (
    QUICK,
    STAGED,
    T,
    Y,
    assert_same_fitted_state,
    fitted_state,
)

from skneuralode import NeuralODERegressor
from skneuralode.datasets import (
    make_damped_oscillator,
)

#: The quick fits here are deliberately short; their "poor fit" warning is not the point.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The fit is poor:sklearn.exceptions.ConvergenceWarning"
)


def prediction_digest(estimator: NeuralODERegressor) -> str:
    return hashlib.sha256(np.ascontiguousarray(estimator.predict(T)).tobytes()).hexdigest()


DETERMINISM_SCRIPT = """
import hashlib, sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from skneuralode import NeuralODERegressor
from skneuralode.datasets import make_damped_oscillator
t, y = make_damped_oscillator(n_times=20, t_end=4.0)
est = NeuralODERegressor(**{settings!r}).fit(t, y)
print(hashlib.sha256(np.ascontiguousarray(est.predict(t)).tobytes()).hexdigest())
"""


def test_the_same_random_state_gives_bit_identical_fits() -> None:
    first = NeuralODERegressor(**{**STAGED, "shooting": True}).fit(T, Y)
    second = NeuralODERegressor(**{**STAGED, "shooting": True}).fit(T, Y)
    assert [r["loss"] for r in first.history_] == [r["loss"] for r in second.history_]
    assert_same_fitted_state(second, fitted_state(first))
    assert prediction_digest(first) == prediction_digest(second)


def test_the_same_random_state_gives_bit_identical_fits_in_another_process() -> None:
    # This process runs torch on one thread (conftest); the other process on two.
    settings = {**STAGED, "shooting": True}
    here = prediction_digest(NeuralODERegressor(**settings).fit(T, Y))
    there = subprocess.run(
        [sys.executable, "-c", DETERMINISM_SCRIPT.format(settings=settings), "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()[-1]
    assert there == here


def test_model_selection_gives_the_same_results_whatever_n_jobs() -> None:
    t = np.linspace(0.0, 6.0, 24)
    y = np.stack(
        [make_damped_oscillator(t, y0=start)[1] for start in [(1, 0), (0, 1), (-1, 0.5), (0.5, -1)]]
    )
    grid = {"hidden_layer_sizes": [(4,), (8,)]}
    settings = {**QUICK, "max_iter": 15}
    results = []
    for n_jobs in (1, 2):
        search = GridSearchCV(NeuralODERegressor(**settings), grid, cv=KFold(2), n_jobs=n_jobs).fit(
            np.stack([t] * 4), y
        )
        results.append(
            (search.cv_results_["mean_test_score"], search.best_estimator_.predict(t, y0=y[:, 0]))
        )
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
