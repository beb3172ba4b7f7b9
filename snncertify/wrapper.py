"""``BoundedSNN``: an unmodified snnTorch network, run and bounded over time."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from . import propagate
from .budget import MemoryBudgetError, Plan, Sizes, network_sizes, parse_budget, plan_chunks
from .encoding import Encoding, make_encoding
from .gradmode import GradMode
from .methods import call_method, method_cost
from .ops import IdentityOp
from .parse import parse_network
from .propagate import Propagation
from .readout import READOUTS, readout_bounds
from .threat import Threat


class BoundedSNN(nn.Module):
    """Runs and bounds an snnTorch ``nn.Sequential`` for ``num_steps`` steps.

    Build it with :func:`snncertify.certify`. Parameters are shared with the
    wrapped network (``self.net``), so training either trains both.

    Shapes: ``x`` is ``[B, ...]`` in [0, 1] (``[T, B, ...]`` binary frames for
    the event encoding); scores are ``[B, K]``. Everything that depends on the
    input encoding is asked of ``self.encoding`` (:mod:`snncertify.encoding`),
    e.g. the rate noise policy (:class:`~snncertify.encoding.Rate`: one seeded
    pattern shared by every sample), which forward, bounds,
    ``verified_accuracy`` and :mod:`attacks` all use.

    Train mode (``bnet.train()``, as ``net.train()``) runs every module as the
    user's own per-step loop does: BatchNorm normalises each step with that
    step's batch statistics and updates its running statistics at every step,
    Dropout draws a fresh mask per step. Bounds in train mode (certified
    training) bound the network with Dropout as the identity and each
    BatchNorm as the affine map of the CLEAN batch's statistics at that step
    (as CROWN-IBP training does); only ``method="ibp"`` supports train-mode
    BatchNorm.
    """

    def __init__(
        self,
        net: nn.Sequential,
        num_steps: int | None,
        encoding: str | Encoding = "direct",
        readout: str = "rate",
        seed: int | None = None,
        slack: float = 1e-5,
        memory_budget: int | float | str | None = None,
    ) -> None:
        super().__init__()
        encoding = make_encoding(encoding, seed)
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        encoding.check_num_steps(num_steps)
        if not slack >= 0:
            raise ValueError(f"slack must be >= 0, got {slack}")
        if memory_budget is not None:
            parse_budget(memory_budget)  # validated now, resolved at each call
        self.net = net
        self.ops = parse_network(net)
        if readout == "membrane" and not propagate.ends_in_neuron(self.ops):
            tail = [op for op in self.ops if not isinstance(op, IdentityOp)][-1]
            raise ValueError(
                f"readout='membrane' needs the network to end with snn.Leaky or snn.Synaptic, it ends with {tail.name}"
            )
        self.num_steps = num_steps
        self.encoding = encoding
        self.readout = readout
        #: the seed of the rate draw (the encoding's own), else of attacks' fresh draws
        self.seed = getattr(encoding, "seed", 0 if seed is None else int(seed))
        self.slack = slack
        self.memory_budget = memory_budget

    def extra_repr(self) -> str:
        return (
            f"num_steps={self.num_steps}, encoding={self.encoding.name!r}, "
            f"readout={self.readout!r}, seed={self.seed}"
        )

    def with_steps(self, num_steps: int) -> BoundedSNN:
        """The same network (shared parameters, encoding, readout, seed, slack) run for
        ``num_steps`` steps; ``self`` when equal. Cached per step count."""
        if num_steps == self.num_steps:
            return self
        siblings = self.__dict__.setdefault("_siblings", {})  # a plain dict: not a submodule
        if num_steps not in siblings:
            siblings[num_steps] = BoundedSNN(self.net, num_steps, self.encoding, self.readout,
                                             self.seed, self.slack, self.memory_budget)
        return siblings[num_steps]

    # ----------------------------------------------------------------- inputs
    def steps_for(self, x: Tensor) -> int:
        """Time steps of a run on ``x``."""
        return self.encoding.steps_for(x, self.num_steps)

    def batch_size(self, x: Tensor) -> int:
        return self.encoding.batch_size(x)

    def draw_noise(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """Encoder noise ``[T, *x.shape]`` (None for an encoding without noise).

        Without ``generator``: the default draw (rate: one seeded pattern, the
        same for every sample). With one: fresh independent draws for every
        sample and step (training, EOT), drawn on the generator's device.
        """
        if generator is None:
            return self.encoding.default_noise(x, self.num_steps)
        r = self.encoding.fresh_noise(self.num_steps, tuple(x.shape), generator)
        return None if r is None else r.to(device=x.device, dtype=x.dtype)

    def prepare(self, x: Tensor, noise: Tensor | None) -> Tensor | None:
        """Check ``x`` (and ``noise``); returns the noise a call on ``x`` uses."""
        self.encoding.check_input(x)
        self.steps_for(x)
        return self.encoding.resolve_noise(x, self.num_steps, noise)

    # ---------------------------------------------------------------- forward
    def trace(
        self, x: Tensor, noise: Tensor | None = None, grad: GradMode | None = None
    ) -> tuple[Tensor, Propagation]:
        """Forward pass that also returns every neuron layer's currents, membranes and spikes."""
        noise = self.prepare(x, noise)
        z, static = self.encoding.encode(x, noise, grad)
        prop = propagate.forward(self.ops, z, static, self.steps_for(x), grad)
        return readout_bounds(self.readout, prop)[0], prop

    def forward(
        self, x: Tensor, noise: Tensor | None = None, grad: GradMode | None = None
    ) -> Tensor:
        """Scores ``[B, K]`` from a fresh state, bit-identical to the snnTorch net.

        ``grad`` (:mod:`snncertify.gradmode`) chooses the backward for this call
        only (None: each neuron's own surrogate); a :class:`~snncertify.gradmode.Relaxed`
        mode changes the values too (a smooth stand-in, never a prediction).
        """
        return self.trace(x, noise, grad)[0]

    def distinct_forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """Scores ``[B, K]`` of the exact network, computed after each neuron layer once
        per distinct spike train of the batch (:func:`propagate.forward_distinct`): for
        batches of near-identical inputs, such as a search's candidates. Equal to
        :meth:`forward` up to the CPU rounding of a matmul over another batch size; no
        gradient. In train mode (batch statistics, per-call effects) it is :meth:`forward`.
        """
        if not propagate.rows_independent(self.ops):
            return self(x, noise)
        noise = self.prepare(x, noise)
        with torch.no_grad():
            z, static = self.encoding.encode(x, noise)
            prop = propagate.forward_distinct(self.ops, z, static, self.steps_for(x))
            return readout_bounds(self.readout, prop)[0]

    # ----------------------------------------------------------------- bounds
    def threat(self, x: Tensor, eps) -> Threat:
        """The threat ``eps`` means for inputs ``x`` (the encoding's parser)."""
        return self.encoding.threat(eps, self.batch_size(x))

    def interval_propagation(self, x: Tensor, threat: Threat, noise: Tensor | None) -> Propagation:
        """S-IBP with every neuron layer's bounds recorded (``x``, ``noise`` already checked).

        A point threat (eps = 0, no flips) returns the forward pass itself
        (in train mode: of the function the bounds bound, see the class docstring).
        """
        stats = None
        if self.batch_dependent():
            stats = {}
            z, static = self.encoding.encode(x, noise)
            point = propagate.forward(self.ops, z, static, self.steps_for(x), stats=stats)
            if threat.is_point():
                return point
        elif threat.is_point():
            return self.trace(x, noise)[1]
        lo, hi, static = self.encoding.input_interval(x, threat, noise)
        return propagate.interval(
            self.ops, lo, hi, static, self.steps_for(x), self.slack, stats=stats
        )

    def batch_dependent(self) -> bool:
        """Whether some op's output depends on the batch now (BatchNorm in train mode)."""
        return any(op.batch_dependent for op in self.ops)

    def check_method_mode(self, method: str) -> None:
        """ValueError if ``method`` cannot bound the network in its current mode."""
        if method != "ibp" and self.batch_dependent():
            raise ValueError(
                f"method {method!r} bounds BatchNorm with its running statistics only; in "
                "train mode (batch statistics) use method='ibp', or call bnet.eval() first"
            )

    def interval_scores(self, x: Tensor, threat: Threat, noise: Tensor | None):
        return readout_bounds(self.readout, self.interval_propagation(x, threat, noise))

    def spec_bounds(
        self, x: Tensor, eps, C: Tensor | None = None, method: str = "ibp",
        noise: Tensor | None = None, need_upper: bool = True,
        memory_budget: int | float | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Bounds ``[B, M]`` of ``C @ scores`` (``C``: ``[B, M, K]``, None = the scores).

        With ``need_upper=False`` a method may skip the upper bound and return
        a looser (still sound) one, e.g. IBP's: use it when only ``lower`` is read.
        ``memory_budget`` (bytes or a size string such as ``"4GB"``; default the
        wrapper's, else :func:`snncertify.budget.default_budget`): the work is
        split into chunks that fit it (:mod:`snncertify.budget`).

        Raises:
            MemoryBudgetError: even one sample and one spec row do not fit, or
                the autograd graph of the whole batch does not.
        """
        self.check_method_mode(method)
        noise = self.prepare(x, noise)
        threat = self.threat(x, eps)
        plan = self.plan(x, C, method, need_upper, memory_budget)
        parts = [call_method(method, self, xc, tc, nc, None if C is None else C[sl],
                             need_upper, plan)
                 for sl, xc, tc, nc in self.split(x, threat, noise, plan, method)]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def split(self, x: Tensor, threat: Threat, noise: Tensor | None, plan: Plan, method: str
              ) -> Iterator[tuple[slice, Tensor, Threat, Tensor | None]]:
        """The batch chunks ``(slice, x, threat, noise)`` of a bound call that ``plan``
        sizes: the whole call, untouched, when it fits in one.

        Raises:
            MemoryBudgetError: a batch that must be split while the network normalises by
                batch statistics (train mode), which chunks would change.
        """
        batch = self.batch_size(x)
        if plan.batch >= batch:
            yield slice(None), x, threat, noise
            return
        if self.batch_dependent():
            raise MemoryBudgetError(
                f"method {method!r} in train mode (batch statistics) cannot be split into "
                f"chunks, and a batch of {batch} does not fit the memory budget: use a "
                "smaller batch or a larger memory_budget")
        for i in range(0, batch, plan.batch):
            sl = slice(i, i + plan.batch)
            yield (sl, self.encoding.take(x, sl), threat.take(sl, x.ndim),
                   None if noise is None else noise[:, sl])

    def sizes(self, x: Tensor) -> Sizes:
        """Per-sample layer sizes on inputs like ``x`` (cached per sample shape)."""
        cache = self.__dict__.setdefault("_sizes", {})  # a plain dict: not a submodule
        key = (self.encoding.sample_shape(x), x.dtype, x.device, self.steps_for(x))
        if key not in cache:
            cache[key] = network_sizes(self, x)
        return cache[key]

    def plan(self, x: Tensor, C: Tensor | None, method: str, need_upper: bool = True,
             memory_budget: int | float | str | None = None) -> Plan:
        """How a bound call on ``x`` is chunked (:func:`snncertify.budget.plan_chunks`)."""
        budget = parse_budget(
            self.memory_budget if memory_budget is None else memory_budget, x.device)
        rows = C.shape[1] if C is not None else self.num_classes(x)
        rows *= 2 if need_upper else 1
        cost = method_cost(method)(self.sizes(x), rows)
        graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return plan_chunks(method, cost, self.batch_size(x), rows, budget, graph)

    def bounds(self, x: Tensor, eps, method: str = "ibp", noise: Tensor | None = None,
               memory_budget: int | float | str | None = None):
        """``(lower, upper)``, each ``[B, K]``, valid for every input in the threat model.

        ``eps``: L-inf radius (direct, rate: for the one noise draw used), or
        for events a bool flip mask / int flip budget. ``memory_budget``: see
        :meth:`spec_bounds`.
        """
        return self.spec_bounds(x, eps, None, method, noise, memory_budget=memory_budget)

    def margin_bounds(
        self, x: Tensor, y: Tensor, eps, method: str = "ibp", noise: Tensor | None = None,
        memory_budget: int | float | str | None = None,
    ) -> Tensor:
        """Lower bounds ``[B, K]`` on ``score_y - score_j`` (entry ``j = y`` is 0)."""
        C = self.margin_spec(x, y)
        lower, _ = self.spec_bounds(x, eps, C, method, noise, need_upper=False,
                                    memory_budget=memory_budget)
        return lower

    def margin_spec(self, x: Tensor, y: Tensor) -> Tensor:
        """``C`` ``[B, K, K]`` with rows ``e_y - e_j`` (row ``y`` is zero)."""
        batch, num_classes = self.batch_size(x), self.num_classes(x)
        if not isinstance(y, Tensor) or y.dtype in (torch.bool,) or y.is_floating_point():
            raise ValueError("y must be an integer tensor of labels [B]")
        if tuple(y.shape) != (batch,):
            raise ValueError(f"y must have shape [B] = [{batch}], got {list(y.shape)}")
        if bool((y < 0).any()) or bool((y >= num_classes).any()):
            raise ValueError(f"labels must lie in [0, {num_classes}), got {y.tolist()}")
        eye = torch.eye(num_classes, device=x.device, dtype=x.dtype)
        return eye[y].unsqueeze(1) - eye.unsqueeze(0)

    def num_classes(self, x: Tensor) -> int:
        """Number of output scores K (one cheap forward on a single sample)."""
        if not hasattr(self, "_num_classes"):
            one = self.encoding.take(x, slice(0, 1))
            noise = self.prepare(one, None)
            z, static = self.encoding.encode(one.detach(), noise)
            with torch.no_grad():  # the fixed function: no running-statistics update, no dropout
                prop = propagate.forward(self.ops, z, static, self.steps_for(one), stats={})
            self._num_classes = prop.out_l.shape[-1]
        return self._num_classes

    def certified(
        self, x: Tensor, y: Tensor, eps, method: str = "ibp", noise: Tensor | None = None,
        memory_budget: int | float | str | None = None,
    ) -> Tensor:
        """Bool ``[B]``: every margin bound ``score_y - score_j``, ``j != y``, is STRICTLY > 0.

        A tie is never certified. For rate encoding the certificate holds for
        the noise draw used (``noise``, or the seeded default draw) only. Runs
        without autograd (a bool has no gradient), so no graph is kept.
        """
        with torch.no_grad():
            margins = self.margin_bounds(x, y, eps, method, noise, memory_budget)
        others = torch.ones_like(margins, dtype=torch.bool)
        others[torch.arange(margins.shape[0]), y] = False
        return torch.where(others, margins > 0, torch.ones_like(others)).all(dim=1)

    def certify(self, *args, **kwargs) -> Tensor:
        """Deprecated name of :meth:`certified` (the per-sample verdict); removed next release."""
        warnings.warn("BoundedSNN.certify is renamed BoundedSNN.certified (snncertify.certify "
                      "wraps a network)", DeprecationWarning, stacklevel=2)
        return self.certified(*args, **kwargs)
