"""The :class:`Encoding` interface and the registry of encodings by name."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..gradmode import GradMode
from ..threat import THREATS, Threat

#: name -> encoding class (``register_encoding``)
ENCODINGS: dict[str, type[Encoding]] = {}


@dataclass
class MilpInputs:
    """The first layer's input of one sample as MILP expressions (:mod:`snncertify.exact`).

    ``static``: one expression for every step (direct input), else None;
    ``seq``: one expression per step, else None. ``witness(sol)`` is the
    input an MILP solution describes, shaped for the wrapper (a batch of
    one). ``continuous``: the inputs are continuous variables (a solution
    may be polished by an LP with the binaries fixed).
    """

    static: object | None
    seq: list | None
    witness: Callable[[np.ndarray], Tensor]
    continuous: bool = False


class Encoding(ABC):
    """How an input becomes the first layer's input at every step, and what a
    threat on it means. One subclass per encoding, registered by name.

    Shapes: an input is ``[B, ...]`` (``[T, B, ...]`` frames when
    ``time_major``); the first layer's input is ``[B, ...]`` when ``static``
    (the same at every step) else ``[T, B, ...]``.
    """

    #: the registry key (``certify(net, encoding=name)``)
    name: ClassVar[str]
    #: inputs carry time first: frames ``[T, B, ...]``
    time_major: ClassVar[bool] = False
    #: the first layer's input is the same at every step (computed once)
    static: ClassVar[bool] = False
    #: an L-inf attack on the input values is a meaningful threat (attacks, PGD-AT, HIRE)
    attackable: ClassVar[bool] = True
    #: the encoder draws noise (``noise=`` applies; attacks may draw it afresh)
    stochastic: ClassVar[bool] = False
    #: the threat classes this encoding accepts, and how an error names them
    threat_types: ClassVar[tuple[type, ...]] = THREATS
    threat_words: ClassVar[str] = "a threat"

    # ----------------------------------------------------------------- shapes
    def batch_size(self, x: Tensor) -> int:
        return x.shape[1 if self.time_major else 0]

    def sample_shape(self, x: Tensor) -> tuple[int, ...]:
        """One sample's shape (without the batch and time axes)."""
        return tuple(x.shape[2 if self.time_major else 1:])

    def take(self, x: Tensor, sl: slice) -> Tensor:
        """The samples ``sl`` of a batch of inputs (or of noise ``[T, B, ...]``)."""
        return x[:, sl] if self.time_major else x[sl]

    def check_num_steps(self, num_steps: int | None) -> None:
        """ValueError unless ``num_steps`` is a positive int (or None where allowed)."""
        if num_steps is None:
            raise ValueError(f"num_steps is required for the {self.name} encoding")
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")

    def steps_for(self, x: Tensor, num_steps: int | None) -> int:
        """Time steps of a run on ``x`` (the model's ``num_steps`` unless the input has frames)."""
        return num_steps

    # ----------------------------------------------------------------- inputs
    def check_input(self, x: Tensor, what: str = "x", hint: str = "") -> None:
        """ValueError unless ``x`` is a float tensor of this encoding's shape and range
        (no NaN); ``what`` names the input in the messages, ``hint`` follows a range error."""
        if not isinstance(x, Tensor):
            raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{what} must be a floating point tensor, got {x.dtype}")
        if x.ndim < (3 if self.time_major else 2):
            want = "[T, B, ...]" if self.time_major else "[B, ...]"
            raise ValueError(f"{self.name} input must have shape {want}, got {list(x.shape)}")
        if x.numel():
            self._check_values(x.detach(), what, hint)

    def _check_values(self, x: Tensor, what: str, hint: str) -> None:
        lo, hi = (float(v) for v in torch.aminmax(x))
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"{what} contains NaN (values must lie in [0, 1])")
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"{what} must lie in [0, 1], got values in [{lo:.6g}, {hi:.6g}]{hint}")

    def resolve_noise(self, x: Tensor, num_steps: int, noise: Tensor | None) -> Tensor | None:
        """The encoder noise a call on ``x`` uses (``noise``, checked, or the default draw)."""
        if noise is not None:
            raise ValueError(f"noise= only applies to the rate encoding, not {self.name!r}")
        return None

    def fresh_noise(self, num_steps: int, batch_shape: tuple[int, ...],
                    generator: torch.Generator) -> Tensor | None:
        """Independent noise ``[T, *batch_shape]`` from ``generator`` (None: no noise)."""
        return None

    def default_noise(self, x: Tensor, num_steps: int) -> Tensor | None:
        """The default draw for ``x`` (None: no noise)."""
        return None

    @abstractmethod
    def encode(self, x: Tensor, noise: Tensor | None,
               grad: GradMode | None = None) -> tuple[Tensor, bool]:
        """First-layer input ``(z, static)``. ``grad`` forms encoder spikes and their gradient."""

    def search_values(self, lo: Tensor, hi: Tensor, noise: Tensor | None,
                      levels: int) -> Tensor:
        """What a gradient-free attack may set each input coordinate to: candidate
        values ``[B, d, L]`` inside its box ``lo, hi`` ``[B, d]`` (``noise``: the
        encoder's draw per coordinate ``[B, d, T]``, or None). Default: ``levels``
        evenly spaced values from ``lo`` to ``hi``."""
        lv = torch.linspace(0, 1, levels, device=lo.device, dtype=lo.dtype)
        return lo[..., None] + lv * (hi - lo)[..., None]

    def exact_encoder(self, x: Tensor) -> Tensor:
        """``x`` with the true encoder's input gradient (identity unless the encoder is a step)."""
        return x

    # ----------------------------------------------------------------- threats
    def threat(self, eps, batch_size: int) -> Threat:
        """Validate ``eps`` and turn it into a threat (a ready threat is checked and passed)."""
        threat = eps if isinstance(eps, THREATS) else self._parse_eps(eps, batch_size)
        if not isinstance(threat, self.threat_types):
            raise ValueError(
                f"{self.name} encoding takes {self.threat_words}, not {type(threat).__name__}")
        return threat

    @abstractmethod
    def _parse_eps(self, eps, batch_size: int) -> Threat:
        """A threat from a plain ``eps`` argument."""

    @abstractmethod
    def input_interval(self, x: Tensor, threat: Threat,
                       noise: Tensor | None) -> tuple[Tensor, Tensor, bool]:
        """Bounds of the first-layer input over the threat: ``(lower, upper, static)``."""

    @abstractmethod
    def milp_inputs(self, model, x: Tensor, threat: Threat, noise: Tensor | None, b: int,
                    num_steps: int) -> MilpInputs:
        """Sample ``b``'s first-layer input over the threat as variables of ``model``."""

    def clean_frames(self, x: Tensor, threat: Threat) -> Tensor | None:
        """The clean first-layer input a threat's concretisation needs (flip budgets), else None."""
        return None

    def __str__(self) -> str:
        return self.name


def register_encoding(cls: type[Encoding]) -> type[Encoding]:
    """Class decorator: make ``cls`` available as ``encoding=cls.name``."""
    if cls.name in ENCODINGS:
        raise ValueError(f"encoding {cls.name!r} is already registered")
    ENCODINGS[cls.name] = cls
    return cls


def make_encoding(spec: str | Encoding, seed: int | None = None) -> Encoding:
    """An encoding object from a name (``"direct"``, ``"rate"``, ``"event"``) or an object.

    ``seed``: the seed of a stochastic encoding's default draw (a name; default 0).
    An object is returned as is; a ``seed`` that disagrees with its own is an error.
    """
    if isinstance(spec, Encoding):
        own = getattr(spec, "seed", None)
        if seed is not None and own is not None and int(seed) != own:
            raise ValueError(f"seed={seed} disagrees with the encoding's own seed ({spec!r})")
        return spec
    if not isinstance(spec, str) or spec not in ENCODINGS:
        raise ValueError(f"encoding must be one of {tuple(ENCODINGS)} or an Encoding, got {spec!r}")
    cls = ENCODINGS[spec]
    return cls(seed=0 if seed is None else int(seed)) if cls.stochastic else cls()
