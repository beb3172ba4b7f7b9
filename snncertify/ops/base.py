"""Base classes of the bound operations.

A network is parsed into a flat list of operations. Each operation wraps the
ORIGINAL module (parameters are shared, never copied) and offers

* ``forward(x)``: the exact computation of the module on ``[N, ...]``;
* ``interval(l, u)``: the S-IBP rule, elementwise bounds of the output for
  every input in the box ``[l, u]``.

Stateless operations see the time axis folded into the batch (``N = T*B``);
stateful ones (the neurons, ``NeuronOp`` and its subclasses) see ``[T, B, ...]`` and loop over
time themselves. The linear (CROWN) rules and the exact verifier's MILP
encoding live next to these in the same classes; ``registry.py`` maps module
types to the classes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..milp import encode_affine


class BoundOp:
    """One operation of the unrolled network.

    Attributes:
        module: the wrapped module (parameters shared with the user's net).
        path: dotted position of the module in the user's net, e.g. ``"2.1"``.
        stateful: True for neurons that carry state across time steps.
    """

    stateful = False

    def __init__(self, module: nn.Module, path: str) -> None:
        self.module = module
        self.path = path

    @classmethod
    def from_module(cls, module: nn.Module, path: str) -> BoundOp:
        """The op for ``module``; a ``TypeError`` naming any option it cannot bound."""
        return cls(module, path)

    @property
    def name(self) -> str:
        return f"{type(self.module).__name__} at {self.path!r}"

    def forward(self, x: Tensor) -> Tensor:
        """Exact output of the module in its current mode, ``x``: ``[N, ...]``."""
        return self.module(x)

    def fixed_forward(self, x: Tensor) -> Tensor:
        """The function the bounds bound (e.g. Dropout as the identity); default ``forward``."""
        return self.forward(x)

    @property
    def per_step(self) -> bool:
        """Whether each call has an effect beyond its output (a train-mode BatchNorm
        updates running statistics, a train-mode Dropout draws a mask): the forward
        then calls it once per time step even on a static input, as the user's own
        loop does."""
        return False

    @property
    def batch_dependent(self) -> bool:
        """Whether the output depends on the batch (train-mode BatchNorm): bounds
        then use the clean batch's statistics (see :class:`~snncertify.ops.BatchNormOp`)."""
        return False

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    # ---------------------------------------------------- linear (CROWN) rules
    #: whether ``backward``/``bias`` are implemented (exactly linear ops only)
    linear = False

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        """Coefficients on the input: ``lam @ A`` for ``y = A x + b``.

        ``lam``: ``[N, *out_shape]`` (N folds time, batch and spec rows);
        returns ``[N, *in_shape]`` with ``lam · (A x) == backward(lam) · x``.
        """
        raise NotImplementedError(f"no linear rule for {self.name}")

    def bias(self, ndim: int) -> Tensor | None:
        """The offset ``b`` broadcastable to ``[N, *out_shape]`` (rank ``ndim``), or None."""
        return None

    #: whether ``backward_relaxed`` is implemented (non-linear ops bounded by lines
    #: chosen from the bounds of their input, e.g. MaxPool2d)
    relaxed = False

    def backward_relaxed(self, lam: Tensor, lower: Tensor, upper: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """Lower bound of ``lam · y`` over inputs in ``[lower, upper]`` ``[N, *in_shape]``.

        ``lam``: ``[N, M, *out_shape]``. Returns ``(lam_in [N, M, *in_shape],
        const [N, M], mag [N, M])`` with ``lam · y >= lam_in · x + const``.
        """
        raise NotImplementedError(f"no linear rule for {self.name}")

    # ------------------------------------------------------ MILP (exact verifier)
    #: the op only moves values (exact in float, 0/1 stays 0/1)
    moves_values = False
    #: fan-in multiplier of the float32 rounding bound (2: not a plain sum, e.g. Winograd)
    milp_fan_factor = 1

    def milp_map(self, model, in_shape: tuple[int, ...]) -> Callable:
        """The exact verifier's encoding: a map ``Expr -> Expr`` applied at every step
        (:mod:`snncertify.milp`); linear ops are encoded by their matrix."""
        if self.linear:
            return encode_affine(model, self, in_shape, self.moves_values, self.milp_fan_factor)
        raise ValueError(f"the exact verifier does not support {self.name}")

    def milp_abs_const(self, in_shape: tuple[int, ...]) -> Tensor | None:
        """Magnitude bound of the constants the float32 op rounds with (None: ``|b|``)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def dot_neurons(lam: Tensor, v: Tensor | float) -> Tensor:
    """Sum over the trailing (neuron) axes of ``lam * v``: ``[B, M, ...] -> [B, M]``.

    ``v`` broadcastable to ``lam``; a ``[B, 1, ...]`` ``v`` uses a batched matmul.
    """
    if isinstance(v, Tensor) and v.ndim == lam.ndim and v.shape[1] == 1 and lam.shape[1] > 1 \
            and v.shape[2:] == lam.shape[2:]:
        return torch.bmm(lam.flatten(2), v.flatten(2).transpose(1, 2)).squeeze(2)
    if isinstance(v, (int, float)) and v == 1:
        return lam.flatten(2).sum(-1)
    return (lam * v).flatten(2).sum(-1)


def rounding_pad(lo: Tensor, hi: Tensor, slack: float) -> Tensor:
    """Float-rounding allowance ``slack * (1 + max(|lo|, |hi|))`` of a bounded value."""
    return slack * (1 + torch.maximum(lo.abs(), hi.abs()))


def vjp_backward(fn, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    """``lam @ A`` for a linear (bias-free) ``fn`` through autograd.

    Differentiable when grad mode is on (``create_graph``), so bounds built
    from it carry gradients to the parameters ``fn`` uses.
    """
    graph = torch.is_grad_enabled()
    with torch.enable_grad():
        z = lam.new_zeros((lam.shape[0], *in_shape), requires_grad=True)
        (grad,) = torch.autograd.grad(fn(z), z, lam, create_graph=graph)
    return grad


class AffineOp(BoundOp):
    """``y = A x + b`` for a linear map A: interval in centre/radius form.

    Subclasses give ``forward`` (``A x + b``) and ``abs_linear`` (``|A| r``),
    and for the linear rules ``backward`` (``lam @ A``) and ``bias`` (``b``).
    The centre goes through the network's own ``forward`` (a fused
    matmul-plus-bias, faster than a bias-free product and a separate add).
    """

    linear = True
    _abs_weight: Tensor | None = None

    def abs_linear(self, r: Tensor) -> Tensor:
        """``|A| r`` (no bias), ``r``: ``[N, ...]`` non-negative."""
        raise NotImplementedError

    def abs_weight(self) -> Tensor | None:
        """``|W|`` of the module's ``weight`` (None: it has none), for the ``abs_linear`` of
        ops whose ``|A|`` is it (Linear, Conv2d); the one of :meth:`reusing_abs` while that
        is active."""
        if self._abs_weight is not None:
            return self._abs_weight
        weight = getattr(self.module, "weight", None)
        return None if weight is None else weight.abs()

    @contextmanager
    def reusing_abs(self):
        """Within it, :meth:`abs_weight` is computed once (T steps of one propagation;
        autograd then also takes its backward once)."""
        self._abs_weight = self.abs_weight()
        try:
            yield
        finally:
            self._abs_weight = None

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        centre = torch.add(lower, upper).mul_(0.5)  # in place on fresh tensors: fewer passes
        radius = torch.sub(upper, lower).mul_(0.5)
        c = self.fixed_forward(centre)
        r = self.abs_linear(radius)
        return c - r, c + r


class MonotoneOp(BoundOp):
    """Elementwise non-decreasing maps (identity, reshapes, max pooling)."""

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return self.fixed_forward(lower), self.fixed_forward(upper)
