"""Trustworthy attacks for snnTorch networks wrapped by ``snncertify.certify``.

>>> from snncertify import certify
>>> import attacks
>>> bnet = certify(net, num_steps=10)                     # an snnTorch nn.Sequential
>>> res = attacks.evaluate(bnet, (x, y), eps=[0.01, 0.03, 0.1],
...                        attacks=["fgsm", "pgd", "apgd-ce", "apgd-dlr", "square"],
...                        bounds="ibp")
>>> print(res.to_markdown()); res.to_csv("robust.csv"); res.plot("robust.png")

``attacks.EvalConfig`` holds a run's settings (``evaluate(bnet, data, config=cfg)``);
the tables are ``snncertify.report``'s. ``AttackableSNN(bnet, grad=...)`` is a plain classifier that any torchattacks
attack accepts directly. The protocol (attacks, steps, step sizes, gradient
modes, what "robust accuracy" means, sanity checks) is in README.md ("Attack evaluation protocol").
"""

from snncertify.report import plot_results as plot
from snncertify.report import results_from_csv as read_csv
from snncertify.report import results_markdown as to_markdown
from snncertify.report import results_to_csv as to_csv

from .checks import (
    ConsistencyError,
    MaskingWarning,
    SanityWarning,
    SoundnessWarning,
    check_consistency,
    run_checks,
)
from .classifier import (
    GRAD_MODES,
    SURROGATES,
    AttackableSNN,
    ZeroGradientWarning,
    make_surrogate,
    strict_correct,
)
from .evaluate import (
    DEFAULT_ATTACKS,
    EvalConfig,
    Results,
    certified_column,
    certified_method,
    evaluate,
)
from .spike_search import SearchOptions, SpikeSearch
from .suite import (
    APGD,
    ATTACKS,
    EOTPGD,
    FGSM,
    PGD,
    Attack,
    AutoAttack,
    OutOfBallWarning,
    Square,
    Transfer,
    make_attack,
    project,
    register_attack,
    tie_aware,
    worst_case,
)

register_attack("spike-search", SpikeSearch)

__all__ = [
    "APGD",
    "ATTACKS",
    "register_attack",
    "DEFAULT_ATTACKS",
    "EOTPGD",
    "EvalConfig",
    "FGSM",
    "GRAD_MODES",
    "PGD",
    "SURROGATES",
    "Attack",
    "AttackableSNN",
    "AutoAttack",
    "ConsistencyError",
    "MaskingWarning",
    "OutOfBallWarning",
    "Results",
    "SanityWarning",
    "SearchOptions",
    "SoundnessWarning",
    "SpikeSearch",
    "Square",
    "Transfer",
    "ZeroGradientWarning",
    "certified_column",
    "certified_method",
    "evaluate",
    "make_attack",
    "make_surrogate",
    "plot",
    "project",
    "read_csv",
    "check_consistency",
    "run_checks",
    "strict_correct",
    "to_csv",
    "tie_aware",
    "to_markdown",
    "worst_case",
]
