"""Model zoo: named, measured, hash-checked snnTorch networks of every defense.

    import zoo
    zoo.list(dataset="digits")             # ['digits-fc-clean', 'digits-fc-crown-ibp', ...]
    zoo.card("mnist-fc-ibp")["results"]    # what the project measured, and how
    net = zoo.load("mnist-fc-ibp")         # an unmodified snnTorch nn.Sequential, eval mode
    bnet = zoo.load_bounded("mnist-fc-ibp")  # certify(net, **card["certify"])

Command line: ``python -m zoo list | card NAME | download NAME | eval NAME [--data-root DATA]
| reproduce | table | add RUN``. Names read ``<dataset>-<arch>[-rate]-<defense>``.
"""

from .hub import ZooDownloadError, cache_dir
from .registry import card, download, list_entries, load, load_bounded

list = list_entries  # noqa: A001 (zoo.list, as timm.list_models)

__all__ = ["ZooDownloadError", "cache_dir", "card", "download", "list", "list_entries", "load",
           "load_bounded"]
