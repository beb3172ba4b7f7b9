"""``python -m snncertify.train``: the training command line, :mod:`snncertify.training.cli`.

``snncertify.train.main`` and ``snncertify.train.train_model`` are kept as aliases of
``snncertify.training.cli.main`` and ``snncertify.training.train_model``.
"""

from .training.cli import main
from .training.run import train_model

__all__ = ["main", "train_model"]

if __name__ == "__main__":
    main()
