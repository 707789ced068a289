"""Does one fast sample slow a whole batch? torchdiffeq's shared step against per-sample steps.

torchdiffeq integrates a batch as one system: one step size for all samples, chosen from
an error norm over the whole batch (the root-mean-square over every element). torchode
(Lienen & Günnemann 2022) keeps one step size per sample. This benchmark measures what
the difference costs on the workload of skneuralode's solves (a batch of trajectories
sharing one output grid), so the choice of backend rests on a figure.

The batch is ``--batch`` (default 100) damped pendulums
``theta'' = -w^2 sin(theta) - 0.1 theta'`` over ``[0, 10]`` with 50 output times, dopri5
at skneuralode's default tolerances (rtol 1e-6, atol 1e-8), float64, one thread. Every
pendulum has ``w = 1`` except one *fast* sample with each ``--fast-frequency`` (1 = a
homogeneous batch). ``w`` is a parameter with a gradient, so each solve is timed forward
and backward (autograd through the solver, as a training step does).

Reported per backend and fast frequency: wall seconds of the forward+backward solve
(median of ``--repeats``), solver steps (torchdiffeq: accepted steps of the batch;
torchode: the most steps any sample took), and the largest error, against scipy's DOP853
at rtol 1e-11, of the fast sample and of the slow ones.

Run from the repository root (``pip install torchode`` first; without it only the
torchdiffeq rows are printed)::

    python benchmarks/step_sizes.py
    python benchmarks/step_sizes.py --batch 100 --fast-frequency 1 30 --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment_summary, write_document

N_TIMES = 50
T_END = 10.0
DAMPING = 0.1
RTOL, ATOL = 1e-6, 1e-8
SEED = 0

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pendulum_field(frequencies: torch.Tensor) -> Field:
    """dy/dt of every pendulum; ``y`` is (batch, 2), ``frequencies`` (batch,)."""

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        angle, velocity = y[:, 0], y[:, 1]
        acceleration = -(frequencies**2) * torch.sin(angle) - DAMPING * velocity
        return torch.stack([velocity, acceleration], dim=1)

    return field


def batch_problem(batch: int, fast_frequency: float) -> tuple[torch.Tensor, np.ndarray]:
    """Initial states (batch, 2) and frequencies (batch,): sample 0 is the fast one."""
    rng = np.random.default_rng(SEED)
    y0 = np.column_stack([rng.uniform(-1.5, 1.5, batch), rng.uniform(-1.0, 1.0, batch)])
    frequencies = np.ones(batch)
    frequencies[0] = fast_frequency
    return torch.as_tensor(y0), frequencies


def reference(y0: np.ndarray, frequency: float, times: np.ndarray) -> np.ndarray:
    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        return np.array([y[1], -(frequency**2) * np.sin(y[0]) - DAMPING * y[1]])

    solution = solve_ivp(
        rhs, (0.0, T_END), y0, method="DOP853", t_eval=times, rtol=1e-11, atol=1e-13
    )
    return solution.y.T  # (n_times, 2)


def solve_torchdiffeq(
    field: Field, y0: torch.Tensor, times: torch.Tensor
) -> tuple[torch.Tensor, int]:
    from torchdiffeq import odeint

    steps = [0]

    class Counted(torch.nn.Module):
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return field(t, y)

        def callback_accept_step(self, t0: Any, y0: Any, dt: Any) -> None:
            steps[0] += 1

    states = odeint(Counted(), y0, times, rtol=RTOL, atol=ATOL, method="dopri5")
    return states.transpose(0, 1), steps[0]  # (batch, n_times, 2)


def solve_torchode(field: Field, y0: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, int]:
    import torchode

    term = torchode.ODETerm(field)
    solver = torchode.AutoDiffAdjoint(
        torchode.Dopri5(term=term), torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
    )
    problem = torchode.InitialValueProblem(y0=y0, t_eval=times.expand(y0.shape[0], -1))
    solution = solver.solve(problem)
    return solution.ys, int(solution.stats["n_steps"].max())


BACKENDS = {"torchdiffeq": solve_torchdiffeq, "torchode": solve_torchode}


def measure(backend: str, batch: int, fast_frequency: float, repeats: int) -> dict[str, Any]:
    y0, frequencies = batch_problem(batch, fast_frequency)
    times = torch.linspace(0.0, T_END, N_TIMES, dtype=torch.float64)
    parameter = torch.tensor(frequencies, requires_grad=True)
    seconds = []
    for _ in range(repeats + 1):  # the first is a warm-up
        parameter.grad = None
        start = time.perf_counter()
        states, steps = BACKENDS[backend](pendulum_field(parameter), y0, times)
        states.square().sum().backward()
        seconds.append(time.perf_counter() - start)
    grid = times.numpy()
    computed = states.detach().numpy()
    errors = [
        float(np.abs(computed[i] - reference(y0[i].numpy(), frequencies[i], grid)).max())
        for i in range(min(batch, 20))  # the fast sample and 19 slow ones
    ]
    return {
        "backend": backend,
        "batch": batch,
        "fast_frequency": fast_frequency,
        "seconds": statistics.median(seconds[1:]),
        "steps": steps,
        "fast_sample_error": errors[0],
        "slow_samples_error": max(errors[1:]) if len(errors) > 1 else None,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'backend':<12} {'batch':>6} {'fast w':>7} {'seconds':>8} {'steps':>6} "
        f"{'fast err':>9} {'slow err':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in results:
        lines.append(
            f"{row['backend']:<12} {row['batch']:>6} {row['fast_frequency']:>7g} "
            f"{row['seconds']:>8.3f} {row['steps']:>6} {row['fast_sample_error']:>9.1e} "
            f"{row['slow_samples_error']:>9.1e}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[100])
    parser.add_argument("--fast-frequency", type=float, nargs="+", default=[1.0, 10.0, 30.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, metavar="PATH")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    backends = [name for name in BACKENDS if importlib.util.find_spec(name) is not None]
    results = [
        measure(backend, batch, fast, arguments.repeats)
        for batch in arguments.batch
        for fast in arguments.fast_frequency
        for backend in backends
    ]
    document = {
        "benchmark": "step_sizes",
        "settings": {
            "n_times": N_TIMES,
            "t_end": T_END,
            "rtol": RTOL,
            "atol": ATOL,
            "threads": arguments.threads,
            "repeats": arguments.repeats,
        },
        "environment": environment_summary(),
        "results": results,
    }
    write_document(document, table(results), arguments.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
