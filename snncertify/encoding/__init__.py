"""Input encodings: how an input becomes the first layer's input at each step.

Each encoding is one class (:class:`Direct`, :class:`Rate`, :class:`Event`)
owning everything that depends on it: checking an input, its shapes (batch
axis, time axis), the per-step input, the rate noise and its draw policy,
which threats apply and how ``eps`` becomes one, the first-layer input set
of a threat (interval bounds, MILP variables and constraints), the clean
input a threat's concretisation needs and what an attack may change.
Everyone else asks the object; a new encoding is one class registered with
:func:`register_encoding`.

* ``direct``: the image ``x`` ``[B, ...]`` is the input at every step.
* ``rate``: ``S_t = 1[x > r_t]`` with noise ``r`` ``[T, B, ...]`` (one seeded
  pattern shared by all samples by default).
* ``event``: the input already is binary frames ``[T, B, ...]``.
"""

from .base import ENCODINGS, Encoding, MilpInputs, make_encoding, register_encoding
from .direct import Direct
from .event import Event
from .rate import Rate, rate_pattern

__all__ = [
    "ENCODINGS",
    "Direct",
    "Encoding",
    "Event",
    "MilpInputs",
    "Rate",
    "make_encoding",
    "rate_pattern",
    "register_encoding",
]
