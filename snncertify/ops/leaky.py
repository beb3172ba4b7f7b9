"""``snn.Leaky``: the neuron whose dynamics :class:`~snncertify.ops.neuron.NeuronOp` implements."""

from __future__ import annotations

import snntorch as snn

from .neuron import NeuronOp
from .registry import register_op


@register_op(snn.Leaky, exact=True)
class LeakyOp(NeuronOp):
    """``snn.Leaky`` over a whole sequence: currents ``[T, B, ...]`` -> spikes ``[T, B, ...]``
    (the dynamics and bound rules of :class:`~snncertify.ops.neuron.NeuronOp`)."""
