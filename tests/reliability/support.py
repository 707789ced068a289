"""What the reliability tests share: a small system, quick settings, bad callables and
the means to compare a fitted estimator before and after."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
import torch

import skneuralode
from skneuralode.datasets import make_damped_oscillator

T, Y = make_damped_oscillator(n_times=20, t_end=4.0)
#: A quick, fully valid fit (collocation only, fixed-step solver): the estimator that
#: the battery throws bad input at.
QUICK = {
    "hidden_layer_sizes": (8,),
    "max_iter": 20,
    "shooting": False,
    "solver": "rk4",
    "random_state": 0,
}
#: A fit with every stage that matters for recovery and interrupts, still a few seconds.
STAGED = {"hidden_layer_sizes": (8,), "max_iter": 40, "solver": "rk4", "random_state": 0}

OUR_CODE = Path(skneuralode.__file__).resolve().parent
SKLEARN_VALIDATION = {
    Path(sklearn.__file__).resolve().parent / "utils" / "_param_validation.py",
    Path(sklearn.__file__).resolve().parent / "utils" / "validation.py",
}


def damped_known(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The damped oscillator's physics with an unknown stiffness ``k``."""
    return torch.stack([y[..., 1], -p["k"] * y[..., 0] - 0.4 * y[..., 1]], dim=-1)


def known_of_wrong_shape(t: torch.Tensor, y: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    return p["k"] * y[..., :1]


def known_returning_numpy(t: torch.Tensor, y: torch.Tensor, p: dict[str, Any]) -> np.ndarray:
    return np.zeros(2)


def known_returning_nan(t: torch.Tensor, y: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    return y * p["k"] * math.nan


def feature_map_that_raises(y: torch.Tensor) -> torch.Tensor:
    return y @ torch.ones(5, 5, dtype=y.dtype)


def feature_map_of_wrong_shape(y: torch.Tensor) -> torch.Tensor:
    return y.sum()


def feature_map_returning_numpy(y: torch.Tensor) -> np.ndarray:
    return y.numpy() ** 3


def feature_map_with_nan(y: torch.Tensor) -> torch.Tensor:
    return torch.log(y)  # the oscillator's states go negative


QUICK_UDE = {
    "known": damped_known,
    "params": {"k": 3.0},
    "hidden_layer_sizes": (),
    "max_iter": 20,
    "shooting": False,
    "polish": False,
    "solver": "rk4",
    "random_state": 0,
}


def fitted_state(estimator: Any) -> tuple[bytes, dict[str, torch.Tensor]]:
    """Everything ``fit`` sets, comparable bit for bit (wall-clock seconds left out)."""
    attributes = {
        key: value
        for key, value in vars(estimator).items()
        if key.endswith("_") and key != "module_"
    }
    if "history_" in attributes:
        attributes["history_"] = [
            {key: value for key, value in record.items() if key != "seconds"}
            for record in attributes["history_"]
        ]
    module = getattr(estimator, "module_", None)
    weights = {} if module is None else {k: v.clone() for k, v in module.state_dict().items()}
    return pickle.dumps(sorted(attributes.items())), weights


def assert_same_fitted_state(estimator: Any, reference: tuple[bytes, dict]) -> None:
    attributes, weights = fitted_state(estimator)
    assert attributes == reference[0]
    assert weights.keys() == reference[1].keys()
    for name, value in weights.items():
        assert torch.equal(value, reference[1][name]), name


def raised_by_our_validation(error: pytest.ExceptionInfo) -> bool:
    """The frame that raised is skneuralode's or scikit-learn's declared validation."""
    raising_file = Path(str(error.traceback[-1].path)).resolve()
    return OUR_CODE in raising_file.parents or raising_file in SKLEARN_VALIDATION
