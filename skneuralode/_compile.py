"""Optional ``torch.compile`` of the vector field, for the duration of training only.

Off by default: on a CPU the default field is a few small matrix products, and compiling
it does not pay (``benchmarks/compile_field.py``: a 1024-pair collocation step and a
batched solve are 0.86x and 0.7-0.8x as fast as eager, after ~10 s of compilation). It
is for large networks and GPUs, where fusing the field's small kernels can cut the
per-step overhead that dominates small systems.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ._vector_fields import ODEModel

# torch's private machinery (dynamo, inductor, fake tensors, ...) and the tools it imports
_COMPILER_MODULES = r"torch\.(_\w+|jit|fx|utils)(\.|$)"


@contextmanager
def compiled_field(model: ODEModel, enabled: bool) -> Iterator[None]:
    """Put ``torch.compile(model.field)`` in place of ``model.field``, then the field back.

    The compiled wrapper shares the field's parameters (training updates them) and
    forwards attribute access to it (penalties, physical parameters). It is compiled with
    dynamic shapes, since collocation batches, segment batches and whole trajectories
    differ in size. Whatever happens, the model holds the plain module again afterwards,
    so the fitted estimator pickles and predicts without a compiler. Warnings that the
    compiler's own machinery raises while tracing (they concern torch's internals, not the
    user's model) are silenced.

    Parameters
    ----------
    model : ODEModel
        The model being trained (modified in place while the context is open).
    enabled : bool
        False makes this a no-op.
    """
    if not enabled:
        yield
        return
    field = model.field
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_COMPILER_MODULES)
            model.field = torch.compile(field, dynamic=True)
            yield
    finally:
        model.field = field
        vars(field).pop("_is_torch_compile", None)  # torch.compile's mark on the module
