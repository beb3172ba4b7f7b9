"""The project's one correctness rule: the true class must STRICTLY beat every other (a tie is wrong).

Training metrics, attacks, evaluation and the zoo all count a sample as correct through
:func:`strict_correct`; nobody uses ``argmax`` (which lets a tie won by the lowest index count).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["margin", "strict_correct"]


def margin(scores: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """``s_y - max_{j != y} s_j`` ``[B]`` (<= 0: wrong, a tie included), or ``s_y - s_target``
    against one class ``target`` ``[B]``; ``scores`` ``[B, K]``, ``y`` ``[B]``."""
    true = scores.gather(1, y.view(-1, 1)).squeeze(1)
    if target is not None:
        return true - scores.gather(1, target.view(-1, 1)).squeeze(1)
    return true - scores.scatter(1, y.view(-1, 1), float("-inf")).amax(1)


def strict_correct(scores: Tensor, y: Tensor) -> Tensor:
    """Bool ``[B]``: the true class STRICTLY beats every other score (a tie is wrong).

    ``scores`` ``[B, K]`` (any units: rates, counts, logits), ``y`` ``[B]`` class indices.
    This is the criterion of ``BoundedSNN.certified``; ``argmax`` would count a tie
    won by the lowest index as correct, which inflates spike-count accuracy.
    """
    return margin(scores, y) > 0
