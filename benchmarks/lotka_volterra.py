"""Lotka–Volterra benchmark of the universal differential equation (UDE paper setting).

x' = a x - b x z, z' = c x z - d z with a=1.3, b=0.9, c=0.8, d=1.8 from
u0=(0.44249296, 4.6280594); 31 points on [0, 3]; Gaussian noise of 5 % of each state's
mean. Four goals, each with a pure NeuralODERegressor beside the UDE:

1. paper setting: known a x and -d z (a, d fixed), the network learns the interactions:
   R^2 against the noise-free truth and the learned missing term along the trajectory
   (relative L2 error against (-b x z, c x z)). For the neural ODE, its field minus the
   same known part.
2. learnable physics: known prey equation a x - b x z with a, b learned from 1.0, the
   network supplies the predator's right-hand side (network_outputs=[1]). For the
   neural ODE, a and b read off its field by least squares on (x, -x z).
3. discovery: sparse regression (pysindy) of goal 1's network term; the model rebuilt
   from known + discovered terms forecasts to t = 6 (twice the span). Beside it, the
   UDE with its network and the neural ODE forecast to t = 6.
4. identifiability: known a x and -d z with a, d learned from 1.0 and the network on
   every state. The data alone do not fix a and d; the minimal-norm split (the
   least-squares projection of the true field on (x, -z) along the trajectory) is what
   the penalty aims at, and is reported beside the truth.

Run ``python benchmarks/lotka_volterra.py`` (``--seeds 0 1 2`` for several noise draws,
``--json PATH`` to save the figures). Times are CPU seconds of one thread (the process
time, so other load on the machine does not inflate them) and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

from skneuralode import NeuralODERegressor, UniversalODERegressor
from skneuralode.datasets import LOTKA_VOLTERRA, make_lotka_volterra

TRUE = LOTKA_VOLTERRA
NOISE_FRACTION = 0.05
FORECAST_END = 6.0

#: One network for both estimators (the UDE paper used a small, smooth network).
NETWORK: dict[str, Any] = {"hidden_layer_sizes": (16, 16), "activation": "softplus"}

#: UDE settings on top. 31 noisy points pin the network's term down only loosely at the
#: ends of the series (large z at t=0, large x at t=3): without a weight decay the network
#: keeps the collocation start's end errors there (the smoothed derivatives are biased at
#: the ends). 1e-4 lowered the missing term's error on each of noise seeds 0-4; 1e-5 did
#: nothing, 1e-3 over-smoothed.
UDE: dict[str, Any] = {"network_weight_decay": 1e-4}


def known_paper(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Known part of goals 1, 3 and 4: growth of the prey, death of the predator."""
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x, -p["d"] * z], dim=-1)


def known_prey(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Known part of goal 2: the whole prey equation; nothing for the predator."""
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x - p["b"] * x * z, torch.zeros_like(z)], dim=-1)


def noisy_data(
    seed: int, noise: float = NOISE_FRACTION
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t (31,), noise-free y (31, 2) and noisy y: noise of 5 % of each state's mean."""
    t, clean = make_lotka_volterra()
    rng = np.random.default_rng(seed)
    noisy = clean + noise * clean.mean(axis=0) * rng.standard_normal(clean.shape)
    return t, clean, noisy


def true_missing_term(y: np.ndarray) -> np.ndarray:
    interaction = y[:, 0] * y[:, 1]
    return np.stack([-TRUE["b"] * interaction, TRUE["c"] * interaction], axis=1)


def known_paper_numpy(y: np.ndarray) -> np.ndarray:
    return np.stack([TRUE["a"] * y[:, 0], -TRUE["d"] * y[:, 1]], axis=1)


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    """R^2 averaged over states; -inf when the prediction is not finite."""
    if not np.all(np.isfinite(predicted)):
        return float("-inf")
    residual = ((truth - predicted) ** 2).sum(axis=0)
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - residual / total))


def timed_fit(estimator: Any, t: np.ndarray, y: np.ndarray) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(t, y)
    return estimator, time.process_time() - cpu, time.perf_counter() - wall


def least_squares(columns: list[np.ndarray], target: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(np.stack(columns, axis=1), target, rcond=None)[0]


def forecast(rhs: Callable[[np.ndarray], np.ndarray], y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Integrate a numpy right-hand side; NaN after a blow-up."""
    solution = solve_ivp(
        lambda _, u: rhs(u[None])[0], (t[0], t[-1]), y0, t_eval=t, rtol=1e-8, atol=1e-10
    )
    states = np.full((t.size, y0.size), np.nan)
    states[: solution.y.shape[1]] = solution.y.T
    return states


# ---------------------------------------------------------------------------- goals
def neural(seed: int, **overrides: Any) -> NeuralODERegressor:
    return NeuralODERegressor(**{**NETWORK, "random_state": seed, **overrides})


def goal_1_and_3(seed: int, data: tuple[np.ndarray, ...], ude: dict, node: Any) -> dict:
    t, clean, noisy = data
    estimator = UniversalODERegressor(
        known=known_paper,
        fixed_params={"a": TRUE["a"], "d": TRUE["d"]},
        random_state=seed,
        **{**NETWORK, **UDE, **ude},
    )
    estimator, cpu, wall = timed_fit(estimator, t, noisy)
    missing = true_missing_term(clean)
    node_missing = node.vector_field(clean) - known_paper_numpy(clean)
    goal_1 = {
        "ude": {
            "r2_vs_truth": estimator.score(t, clean),
            "missing_term_rel_l2": relative_error(estimator.network_term(clean), missing),
            "cpu_s": cpu,
            "wall_s": wall,
        },
        "node": {
            "r2_vs_truth": node.score(t, clean),
            "missing_term_rel_l2": relative_error(node_missing, missing),
            "cpu_s": node.cpu_s_,
            "wall_s": node.wall_s_,
        },
    }
    # goal 3: discovery and the forecast to twice the span
    long_t, long_truth = make_lotka_volterra(n_times=61, t_end=FORECAST_END)
    try:
        equations = estimator.discover_equations(feature_names=["x", "z"])
    except ImportError as error:
        return {"goal_1": goal_1, "goal_3": {"skipped": str(error)}}
    discovery = estimator.discovery_
    names = discovery.term_names
    coefficients = discovery.coefficients
    kept = {state: [names[j] for j in np.flatnonzero(coefficients[state])] for state in range(2)}
    interaction = names.index("x z")
    coefficient_errors = [
        abs(coefficients[0, interaction] / -TRUE["b"] - 1.0),
        abs(coefficients[1, interaction] / TRUE["c"] - 1.0),
    ]

    def rebuilt(states: np.ndarray) -> np.ndarray:
        return known_paper_numpy(states) + discovery.rates(states)

    rebuilt_forecast = forecast(rebuilt, estimator.y0_, long_t)
    goal_3 = {
        "equations": equations,
        "kept_terms": kept,
        "only_xz_kept": kept == {0: ["x z"], 1: ["x z"]},
        "xz_coefficients": coefficients[:, interaction].tolist(),
        "xz_coefficient_rel_errors": coefficient_errors,
        "ude_rebuilt_forecast_r2_t6": r2(long_truth, rebuilt_forecast),
        "ude_network_forecast_r2_t6": r2(long_truth, estimator.predict(long_t)),
        "node_forecast_r2_t6": r2(long_truth, node.predict(long_t)),
    }
    return {"goal_1": goal_1, "goal_3": goal_3}


def goal_2(seed: int, data: tuple[np.ndarray, ...], ude: dict, node: Any) -> dict:
    t, clean, noisy = data
    estimator = UniversalODERegressor(
        known=known_prey,
        params={"a": 1.0, "b": 1.0},
        network_outputs=[1],
        random_state=seed,
        **{**NETWORK, **UDE, **ude},
    )
    estimator, cpu, wall = timed_fit(estimator, t, noisy)
    x, z = clean[:, 0], clean[:, 1]
    node_a, node_b = least_squares([x, -x * z], node.vector_field(clean)[:, 0])
    return {
        "ude": {
            "a": estimator.params_["a"],
            "b": estimator.params_["b"],
            "a_rel_error": abs(estimator.params_["a"] / TRUE["a"] - 1),
            "b_rel_error": abs(estimator.params_["b"] / TRUE["b"] - 1),
            "r2_vs_truth": estimator.score(t, clean),
            "cpu_s": cpu,
            "wall_s": wall,
        },
        "node": {
            "a": float(node_a),
            "b": float(node_b),
            "a_rel_error": abs(node_a / TRUE["a"] - 1),
            "b_rel_error": abs(node_b / TRUE["b"] - 1),
            "r2_vs_truth": node.score(t, clean),
        },
    }


def goal_4(seed: int, data: tuple[np.ndarray, ...], ude: dict, node: Any) -> dict:
    t, clean, noisy = data
    estimator = UniversalODERegressor(
        known=known_paper,
        params={"a": 1.0, "d": 1.0},
        random_state=seed,
        **{**NETWORK, **UDE, **ude},
    )
    estimator, cpu, wall = timed_fit(estimator, t, noisy)
    x, z = clean[:, 0], clean[:, 1]
    true_field = np.stack(
        [TRUE["a"] * x - TRUE["b"] * x * z, TRUE["c"] * x * z - TRUE["d"] * z], axis=1
    )
    minimal_a = least_squares([x], true_field[:, 0])[0]
    minimal_d = -least_squares([z], true_field[:, 1])[0]
    node_field = node.vector_field(clean)
    node_a = least_squares([x], node_field[:, 0])[0]
    node_d = -least_squares([z], node_field[:, 1])[0]
    return {
        "truth": {"a": TRUE["a"], "d": TRUE["d"]},
        "minimal_norm_split": {"a": float(minimal_a), "d": float(minimal_d)},
        "ude": {
            "a": estimator.params_["a"],
            "d": estimator.params_["d"],
            "a_rel_error": abs(estimator.params_["a"] / TRUE["a"] - 1),
            "d_rel_error": abs(estimator.params_["d"] / TRUE["d"] - 1),
            "network_share": float(
                np.linalg.norm(estimator.network_term(clean))
                / np.linalg.norm(estimator.vector_field(clean))
            ),
            "r2_vs_truth": estimator.score(t, clean),
            "cpu_s": cpu,
            "wall_s": wall,
        },
        "node": {
            "a": float(node_a),
            "d": float(node_d),
            "a_rel_error": abs(node_a / TRUE["a"] - 1),
            "d_rel_error": abs(node_d / TRUE["d"] - 1),
        },
    }


def run(
    seed: int,
    ude: dict | None = None,
    goals: tuple[int, ...] = (1, 2, 3, 4),
    noise: float = NOISE_FRACTION,
) -> dict:
    """All goals for one noise draw; ``ude`` overrides the UDE's settings."""
    ude = dict(ude or {})
    if "hidden_layer_sizes" in ude:
        ude["hidden_layer_sizes"] = tuple(ude["hidden_layer_sizes"])
    data = noisy_data(seed, noise)
    t, _, noisy = data
    node, cpu, wall = timed_fit(neural(seed), t, noisy)
    node.cpu_s_, node.wall_s_ = cpu, wall
    results: dict[str, Any] = {"seed": seed, "noise": noise}
    if 1 in goals or 3 in goals:
        results.update(goal_1_and_3(seed, data, ude, node))
    if 2 in goals:
        results["goal_2"] = goal_2(seed, data, ude, node)
    if 4 in goals:
        results["goal_4"] = goal_4(seed, data, ude, node)
    return results


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(results: dict) -> str:
    """The figures side by side, one line per figure."""
    lines = [
        f"seed {results['seed']}, noise {results['noise']:.0%} of each state's mean",
        f"{'figure':<44s} {'UDE':>10s} {'NeuralODE':>10s}",
    ]

    def row(label: str, ude: Any, node: Any = "") -> None:
        lines.append(f"{label:<44s} {_format(ude):>10s} {_format(node):>10s}")

    if "goal_1" in results:
        g = results["goal_1"]
        row(
            "1  R^2 vs noise-free truth (>= 0.98)",
            g["ude"]["r2_vs_truth"],
            g["node"]["r2_vs_truth"],
        )
        row(
            "1  missing term rel. L2 (<= 0.20)",
            g["ude"]["missing_term_rel_l2"],
            g["node"]["missing_term_rel_l2"],
        )
        row("1  fit CPU seconds (< 60)", g["ude"]["cpu_s"], g["node"]["cpu_s"])
    if "goal_2" in results:
        g = results["goal_2"]
        row("2  a (truth 1.3; within 10 %)", g["ude"]["a"], g["node"]["a"])
        row("2  b (truth 0.9; within 10 %)", g["ude"]["b"], g["node"]["b"])
        row("2  R^2 vs noise-free truth", g["ude"]["r2_vs_truth"], g["node"]["r2_vs_truth"])
        row("2  fit CPU seconds (< 60)", g["ude"]["cpu_s"])
    if "goal_3" in results and "skipped" not in results["goal_3"]:
        g = results["goal_3"]
        row("3  discovered x'", g["equations"][0])
        row("3  discovered z'", g["equations"][1])
        row("3  only x z kept", g["only_xz_kept"])
        row("3  x z coefficient errors (<= 0.10)", max(g["xz_coefficient_rel_errors"]))
        row("3  forecast R^2 to t=6, rebuilt (>= 0.9)", g["ude_rebuilt_forecast_r2_t6"])
        row(
            "3  forecast R^2 to t=6, with network",
            g["ude_network_forecast_r2_t6"],
            g["node_forecast_r2_t6"],
        )
    if "goal_4" in results:
        g = results["goal_4"]
        row("4  a (truth 1.3)", g["ude"]["a"], g["node"]["a"])
        row("4  d (truth 1.8)", g["ude"]["d"], g["node"]["d"])
        row(
            "4  minimal-norm split a, d",
            f"{g['minimal_norm_split']['a']:.3f}, {g['minimal_norm_split']['d']:.3f}",
        )
        row("4  network share of the field", g["ude"]["network_share"])
        row("4  fit CPU seconds (< 60)", g["ude"]["cpu_s"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--goals", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument(
        "--noise", type=float, default=NOISE_FRACTION, help="fraction of each state's mean"
    )
    parser.add_argument("--ude", type=json.loads, default={}, help="UDE overrides (JSON)")
    parser.add_argument("--json", help="also write the figures to this file")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    everything = []
    for seed in arguments.seeds:
        results = run(seed, arguments.ude, tuple(arguments.goals), arguments.noise)
        everything.append(results)
        print(table(results), flush=True)
    text = json.dumps(everything, indent=2, default=float)
    print(text)
    if arguments.json:
        with open(arguments.json, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
