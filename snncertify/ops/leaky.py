"""``snn.Leaky``: the exact snnTorch 1.0 dynamics and their S-IBP rule.

Per step t (elementwise, ``U_0 = 0``), exactly as ``snn.Leaky.forward`` computes:

    R_t = H(U_{t-1} - θ)                       (reset from the PREVIOUS membrane)
    subtract: U_t = (β U_{t-1} + I_t) - R_t θ
    zero:     U_t = β ((1 - R_t) U_{t-1}) + I_t = β g(U_{t-1}) + I_t,  g(u) = u 1[u <= θ]
    none:     U_t = β U_{t-1} + I_t
    S_t = H(U_t - θ)                           (strict: U_t == θ does not spike)

with β clamped to [0, 1]. The float operations are written in the same order as
snnTorch so that the forward (and the bounds at eps = 0) are bit-identical.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..gradmode import GradMode, OwnSurrogate
from .base import BoundOp

_OWN = OwnSurrogate()

RESET_MODES = ("subtract", "zero", "none")


def unsupported_leaky_options(module) -> list[str]:
    """Options of ``snn.Leaky`` this toolkit does not model (empty if none)."""
    bad = []
    if getattr(module, "inhibition", False):
        bad.append("inhibition=True")
    if getattr(module, "state_quant", False):
        bad.append("state_quant")
    if not getattr(module, "reset_delay", True):
        bad.append("reset_delay=False")
    gsf = getattr(module, "graded_spikes_factor", None)
    if gsf is not None and not bool(torch.all(torch.as_tensor(gsf) == 1)):
        bad.append("graded_spikes_factor != 1")
    if getattr(module, "reset_mechanism", "subtract") not in RESET_MODES:
        bad.append(f"reset_mechanism={module.reset_mechanism!r}")
    return bad


class LeakyOp(BoundOp):
    """``snn.Leaky`` over a whole sequence.

    Inputs are currents ``[T, B, ...]``; outputs are spikes ``[T, B, ...]``.
    The neuron's own ``spike_grad`` is used for every Heaviside, so forward
    and bounds carry the module's surrogate gradient.
    """

    stateful = True

    @property
    def reset(self) -> str:
        return self.module.reset_mechanism

    def beta(self) -> Tensor:
        return self.module.beta.clamp(0, 1)

    def threshold(self) -> Tensor:
        return self.module.threshold

    def spike(self, mem: Tensor) -> Tensor:
        """``H(mem - θ)`` with the module's surrogate gradient."""
        return self.module.spike_grad(mem - self.module.threshold)

    def forward_seq(
        self, cur: list[Tensor], grad: GradMode | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Exact dynamics. ``cur``: T currents ``[B, ...]`` -> (T spikes ``[B, ...]``,
        membranes ``[T, B, ...]``).

        ``grad``: the gradient mode of this call (:mod:`snncertify.gradmode`;
        None: the module's own surrogate). Nothing is stored on the op.
        """
        mode = grad or _OWN
        beta, thr = self.beta(), self.threshold()
        mem = torch.zeros_like(cur[0])
        spikes, mems = [], []
        spk = mode.spike(self, mem - thr)
        for t in range(len(cur)):
            reset = mode.reset(self, spk)
            if self.reset == "subtract":
                mem = beta * mem + cur[t] - reset * thr
            elif self.reset == "zero":
                mem = beta * ((1 - reset) * mem) + cur[t]
            else:
                mem = beta * mem + cur[t]
            spk = mode.spike(self, mem - thr)
            spikes.append(spk)
            mems.append(mem)
        return mode.finish(self, cur, spikes), torch.stack(mems)

    def interval_seq(
        self, cur_l: list[Tensor], cur_u: list[Tensor], slack: float = 0.0,
        mem_bounds: tuple[list[Tensor], list[Tensor]] | None = None,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """S-IBP through time.

        Args:
            cur_l, cur_u: bounds of the input current, T tensors ``[B, ...]``.
            slack: relative widening of every membrane bound (covers float
                rounding differences between this computation and the
                forward pass of a perturbed input); 0 gives the exact
                point computation.
            mem_bounds: optional other SOUND membrane bounds ``(lower, upper)``,
                T tensors ``[B, ...]`` each (e.g. refined by CROWN): every
                step's membrane interval is intersected with them before it
                is thresholded and carried on (the intersection of two sound
                intervals is sound). None (the default) changes nothing.

        Returns:
            ``(spk_l, spk_u, mem_l, mem_u)``: T tensors ``[B, ...]`` each (not
            stacked: most callers never read the membranes). The decay
            and reset term is bounded as ONE function of ``U_{t-1}``, which
            is tighter than bounding ``β U`` and ``θ R`` separately.
        """
        beta, thr = self.beta(), self.threshold()
        thr_pos = thr.clamp(min=0)
        lift = beta * thr - thr  # h just above θ (subtract reset)
        ml = mu = torch.zeros_like(cur_l[0])
        rl = ru = self.spike(ml).detach()  # R_1 = H(U_0 - θ), U_0 = 0
        out = ([], [], [], [])
        for t in range(len(cur_l)):
            il, iu = cur_l[t], cur_u[t]
            if self.reset == "subtract":
                # h(u) = βu - θ H(u - θ): βu up to θ, βu - θ above it (infimum βθ - θ).
                base_l, base_u = torch.addcmul(il, beta, ml), torch.addcmul(iu, beta, mu)
                lo = torch.addcmul(base_l, rl, thr, value=-1)
                hi = torch.addcmul(base_u, ru, thr, value=-1)
                unstable = rl != ru
                lo = torch.where(unstable, torch.minimum(base_l, lift + il), lo)
                hi = torch.where(unstable, torch.maximum(base_u - thr, beta * thr + iu), hi)
            elif self.reset == "zero":
                # g(u) = u 1[u <= θ] on [ml, mu]. Upper: mu if no spike is possible,
                # max(θ, 0) if one is, 0 if it is certain. Lower: ml if no spike is
                # possible, else min(ml, 0) (exact when unstable; when a spike is
                # certain g = 0 >= min(ml, 0), equal to it for θ >= 0).
                spike_possible = ru > 0
                gl = torch.where(spike_possible, ml.clamp(max=0), ml)
                gu = torch.where(spike_possible, torch.addcmul(thr_pos, rl, thr_pos, value=-1), mu)
                lo, hi = torch.addcmul(il, beta, gl), torch.addcmul(iu, beta, gu)
            else:
                lo, hi = torch.addcmul(il, beta, ml), torch.addcmul(iu, beta, mu)
            if slack:  # pad = slack (1 + max(|lo|, |hi|)), and max(|lo|, |hi|) = max(-lo, hi)
                mag = torch.maximum(hi, -lo).add_(1)  # in place on a fresh tensor
                lo, hi = torch.add(lo, mag, alpha=-slack), torch.add(hi, mag, alpha=slack)
            if mem_bounds is not None:
                lo, hi = torch.maximum(lo, mem_bounds[0][t]), torch.minimum(hi, mem_bounds[1][t])
            ml, mu = lo, hi
            sl, su = self.spike(ml), self.spike(mu)
            rl, ru = sl.detach(), su.detach()  # next step's reset is this step's spike
            for seq, v in zip(out, (sl, su, ml, mu), strict=True):
                seq.append(v)
        return out
