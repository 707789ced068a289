"""The field's value and its Jacobian in the state, by reverse-mode autograd, batched.

The members of a batch are independent, so ``f(t, z)[b]`` depends on ``z[b]`` only and
the Jacobian is block diagonal: ``n_states`` backward passes of ``f[:, i].sum()`` give
every member's row ``i`` at once, whatever the batch size. Those passes run as one,
batched by ``torch.func.vmap`` (a third of the time for three states, and far less for
the twenty-odd of a sensitivity system); a backward formula that cannot be batched falls
back to one pass per row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NOT_DIFFERENTIABLE = (
    "solver={method!r} differentiates the vector field in the state by autograd, but the "
    "field's output does not depend on the state through torch operations with gradients "
    "(known physics computed with numpy, float(), .item(), .detach() or torch.no_grad()?). "
    "Write the field with differentiable torch operations, or choose an explicit solver "
    "such as 'dopri5'."
)


def _reaches(rates: torch.Tensor, point: torch.Tensor) -> bool:
    """Whether ``rates`` depend on ``point`` through the autograd graph."""
    (gradient,) = torch.autograd.grad(
        rates, point, torch.ones_like(rates), retain_graph=True, allow_unused=True
    )
    return gradient is not None


def reads_time(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    time: float,
    states: torch.Tensor,
) -> bool:
    """Whether ``func(t, z)`` depends on ``t`` through the autograd graph at one point.

    A field that reads the time only through operations without a gradient (a
    comparison, ``floor``) has a time derivative of zero almost everywhere, which is
    what the method's time term then uses.
    """
    with torch.enable_grad():
        probe = torch.tensor(time, dtype=states.dtype, device=states.device, requires_grad=True)
        rates = func(probe, states.detach())
        if not rates.requires_grad:
            return False
        (gradient,) = torch.autograd.grad(rates.sum(), probe, allow_unused=True)
    return gradient is not None


def value_and_jacobian(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    time: torch.Tensor,
    states: torch.Tensor,
    *,
    method: str,
    check: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``f(t, y)``, its Jacobian ``df/dy`` and the state they were taken at.

    Parameters
    ----------
    func : callable
        ``func(t, z) -> dz/dt`` with ``z`` of shape (n_batch, n_states).
    time : Tensor
        Scalar time.
    states : Tensor of shape (n_batch, n_states)
    method : str
        The solver's name, for the error message.
    check : bool, default=False
        Check that the field's output reaches the state through autograd (one backward
        pass more; the integration checks at its first point).

    Returns
    -------
    rates : Tensor of shape (n_batch, n_states)
    jacobian : Tensor of shape (n_batch, n_states, n_states)
        ``jacobian[b, i, j] = d rates[b, i] / d states[b, j]``. Inside a computation that
        records gradients it is differentiable itself (``create_graph``), so that the
        gradient of the discrete solution is exact; otherwise it is detached.
    states : Tensor of shape (n_batch, n_states)
        ``states``, or a leaf copy that requires a gradient where ``states`` did not:
        the stages must be built from it for the Jacobian's graph to hold.

    Raises
    ------
    ValueError
        If the field's output has no autograd path to the state (with ``check``).
    """
    record = torch.is_grad_enabled()
    with torch.enable_grad():
        point = states if states.requires_grad else states.detach().requires_grad_(True)
        rates = func(time, point)
        if not rates.requires_grad:
            raise ValueError(NOT_DIFFERENTIABLE.format(method=method))
        n_states = rates.shape[1]
        basis = torch.eye(n_states, dtype=rates.dtype, device=rates.device)

        def row(direction: torch.Tensor) -> torch.Tensor:
            (gradient,) = torch.autograd.grad(
                rates,
                point,
                grad_outputs=direction.expand_as(rates),
                retain_graph=True,
                create_graph=record,
                allow_unused=True,
                materialize_grads=True,
            )
            return gradient

        if check and not _reaches(rates, point):
            raise ValueError(NOT_DIFFERENTIABLE.format(method=method))
        try:
            rows = torch.func.vmap(row)(basis)  # (n_states, n_batch, n_states)
        except RuntimeError:  # a backward formula without a batching rule
            rows = torch.stack([row(direction) for direction in basis])
        jacobian = rows.transpose(0, 1)  # (n_batch, n_states, n_states)
    if not record:
        return rates.detach(), jacobian.detach(), states
    return rates, jacobian, point
