"""Measuring an entry (the numbers on its card) and adding a trained run to the zoo.

One protocol for every card (stored in it as ``protocol``; :func:`measure`
replays it):

* ``clean_accuracy``: the full test set, the card's ``certify`` wrapping (rate
  input: the default noise draw, one pattern per seed shared by all samples),
  a tie counts as an error;
* ``results``: ``attacks.evaluate`` (settings: :func:`eval_config`) on the seeded test subset
  (``protocol["n"]`` images, ``None``: all; ``protocol["subset_seed"]``) at
  every eps of ``protocol["eps"]``: one row per eps and column (clean, each
  attack, ``robust`` = the worst case over the suite, ``certified (<method>)``
  per bound method), with ``accuracy`` a fraction of ``n``;
* torch runs on ``protocol["threads"]`` CPU threads (results are bit-identical
  on a rerun with the same threads).
"""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import attacks
from snncertify import BoundedSNN
from snncertify.io import atomic_path, write_text
from snncertify.report import fmt_percent, percent
from snncertify.training.checkpoint import load_checkpoint, versions
from snncertify.training.config import card_training
from snncertify.training.datasets import DATASETS, make_loader, test_subset
from snncertify.training.loop import evaluate

from . import hub, registry
from .registry import CARDS_DIR, _cards

#: the fields of an ``attacks.evaluate`` row kept on a card (its ``attack`` renamed ``column``)
ROW_KEYS = ("eps", "column", "kind", "accuracy", "correct", "n")
#: kept too where a row has them (attack and worst-case rows): breaks by a tie only / a flip
TIE_KEYS = ("ties", "flips")
#: kept on attack rows: wall seconds of the attack over the subset (``threads`` CPU threads)
TIME_KEYS = ("seconds",)

#: what a card's commands say instead of a machine's data folder
DATA_PLACEHOLDER = "DATA"


def portable_command(command: str | None, name: str) -> str | None:
    """``command`` as it reproduces on another machine: ``--out`` becomes ``runs/<name>``,
    ``--data-root`` becomes ``DATA``; any other absolute path is an error (ValueError)."""
    if command is None:
        return None
    words, out = shlex.split(command), []
    for i, w in enumerate(words):
        flag = words[i - 1] if i else ""
        if flag == "--out":
            w = f"runs/{name}"
        elif flag == "--data-root":
            w = DATA_PLACEHOLDER
        elif w.startswith(("/", "~")) or w.split("=", 1)[-1].startswith(("/", "~")):
            raise ValueError(f"card {name}: the command holds the machine path {w!r}: {command}")
        out.append(w)
    return shlex.join(out)


def default_protocol(dataset: str, eps: float) -> dict[str, Any]:
    """The card protocol by data set; both use the full default attack suite
    (``attacks.DEFAULT_ATTACKS``, SpikeSearch included).

    digits: all 360 test images at eps 0.02, 0.05, 0.1; IBP, CROWN-IBP, CROWN.
    Others (MNIST): a seeded 1,000-image subset at the training eps; IBP and CROWN-IBP (full
    CROWN does not fit in memory at this size, issue 9).
    """
    suite = list(attacks.DEFAULT_ATTACKS)
    if dataset == "digits":
        return {"eps": [0.02, 0.05, 0.1], "attacks": suite,
                "methods": ["ibp", "crown-ibp", "crown"], "n": None, "subset_seed": 0,
                "seed": 0, "batch_size": 360, "threads": 1}
    return {"eps": [eps], "attacks": suite, "methods": ["ibp", "crown-ibp"], "n": 1000,
            "subset_seed": 0, "seed": 0, "batch_size": 250, "threads": 1}


def eval_config(protocol: dict[str, Any], **settings: Any) -> attacks.EvalConfig:
    """The ``attacks.evaluate`` settings of a card protocol (its ``eps``, ``attacks``,
    ``methods`` as ``bounds``, ``seed``, ``batch_size``) plus ``settings`` (other
    :class:`attacks.EvalConfig` fields: ``device``, ``progress``, ...)."""
    return attacks.EvalConfig(eps=protocol["eps"], attacks=protocol["attacks"],
                              bounds=protocol["methods"], seed=protocol["seed"],
                              batch_size=protocol["batch_size"], **settings)


def measure(bnet: BoundedSNN, dataset: str, data_root: str | None, protocol: dict[str, Any],
            device: str | torch.device = "cpu", n: int | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Replay ``protocol`` on ``bnet``: ``{"clean_accuracy", "n_test", "results", "warnings"}``.

    Args:
        n: override ``protocol["n"]`` (a quick check; the numbers then differ from the card's).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(protocol.get("threads", threads))
    try:
        bnet = bnet.to(device).eval()
        loader = make_loader(dataset, data_root, False, 500, num_steps=bnet.num_steps)
        clean = evaluate(bnet, loader, device)
        x, y = test_subset(dataset, data_root, n or protocol["n"], protocol["subset_seed"])
        res = attacks.evaluate(bnet, (x, y),
                               config=eval_config(protocol, device=device, progress=progress))
    finally:
        torch.set_num_threads(threads)
    rows = [{k: r["attack" if k == "column" else k] for k in ROW_KEYS}
            | {k: r[k] for k in TIE_KEYS if k in r}
            | ({k: r[k] for k in TIME_KEYS} if r["kind"] == "attack" else {}) for r in res]
    check_order(getattr(bnet, "name", dataset), rows)
    return {"clean_accuracy": clean, "n_test": len(loader.dataset), "results": rows,
            "warnings": list(res.warnings)}


def differences(card: dict[str, Any], measured: dict[str, Any], tol: float = 1e-9) -> list[str]:
    """Every number of ``card`` that ``measured`` does not reproduce (empty: all equal)."""
    out = []
    if abs(card["clean_accuracy"] - measured["clean_accuracy"]) > tol:
        out.append(f"clean accuracy: card {fmt_percent(card['clean_accuracy'])}, "
                   f"measured {fmt_percent(measured['clean_accuracy'])}")
    have = {(float(r["eps"]), r["column"]): r for r in measured["results"]}
    for r in card["results"]:
        m = have.pop((float(r["eps"]), r["column"]), None)
        if m is None:
            out.append(f"eps {r['eps']:g} {r['column']}: not measured")
        elif abs(m["accuracy"] - r["accuracy"]) > tol or m["n"] != r["n"]:
            out.append(f"eps {r['eps']:g} {r['column']}: card {fmt_percent(r['accuracy'])} "
                       f"(n={r['n']}), measured {fmt_percent(m['accuracy'])} (n={m['n']})")
    out += [f"eps {e:g} {c}: measured, not on the card" for e, c in have]
    return out


def entry_name(cfg: dict[str, Any]) -> str:
    """``<dataset>-<arch>[-<encoding>]-<defense>`` of a training run's config (the
    encoding is named when it is not the data set's own, e.g. ``mnist-fc-rate-ibp``)."""
    arch = cfg["arch"]
    prefix = arch if arch.startswith(cfg["dataset"] + "-") else f"{cfg['dataset']}-{arch}"
    used = cfg["certify"]["encoding"]  # a name tag only: nothing here depends on the encoding
    tag = "" if used == DATASETS[cfg["dataset"]].encoding else f"-{used}"
    return f"{prefix}{tag}-{defense_label(cfg)}"


def defense_label(cfg: dict[str, Any]) -> str:
    """The zoo's defense name: the defense, or the bound method of certified training."""
    if cfg["defense"] == "certified":
        return cfg["defense_params"]["method"]
    return cfg["defense"]


def add_run(run: str | Path, data_root: str | None, protocol: dict[str, Any] | None = None,
            notes: str = "", base_url: str = hub.DEFAULT_BASE_URL, progress: bool = True,
            ) -> dict[str, Any]:
    """Measure a training run folder and add it to the zoo (weights + card, written atomically).

    The weights are copied to ``zoo/checkpoints/<name>.pt``; the card to ``zoo/cards/<name>.json``.
    """
    bnet, cfg = load_checkpoint(run)
    name = entry_name(cfg)
    eps = cfg["defense_params"].get("eps") or 0.1
    protocol = protocol or default_protocol(cfg["dataset"], eps)
    t0 = time.perf_counter()
    m = measure(bnet, cfg["dataset"], data_root, protocol, progress=progress)
    seconds = time.perf_counter() - t0
    dst = hub.PACKAGE_DIR / f"{name}.pt"
    with atomic_path(dst) as tmp:
        shutil.copyfile(Path(run) / "model.pt", tmp)
    root = DATA_PLACEHOLDER if cfg["dataset"] != "digits" else None
    card = {
        "name": name, "dataset": cfg["dataset"], "arch": cfg["arch"],
        "defense": defense_label(cfg), "neuron": cfg.get("neuron", {}),
        "neurons": cfg.get("neurons", []), "certify": cfg["certify"],
        "training": card_training(cfg | {"command": portable_command(cfg.get("command"), name)}),
        "clean_accuracy": m["clean_accuracy"], "n_test": m["n_test"], "results": m["results"],
        "protocol": protocol | {"measure_seconds": round(seconds, 1)},
        "warnings": m["warnings"],
        "command": f"python -m zoo eval {name}" + (f" --data-root {root}" if root else ""),
        "date": datetime.date.today().isoformat(), "versions": versions(),
        "weights": {"file": dst.name, "sha256": hub.sha256(dst), "bytes": dst.stat().st_size,
                    "url": base_url + dst.name},
        "notes": notes,
    }
    write_text(CARDS_DIR / f"{name}.json", json.dumps(card, indent=1) + "\n")
    _cards.cache_clear()
    return card


def check_order(name: str, rows: list[dict[str, Any]]) -> None:
    """AssertionError unless certified <= robust <= every attack column <= clean at each eps."""
    by_eps: dict[float, dict[str, list[float]]] = {}
    for r in rows:
        by_eps.setdefault(float(r["eps"]), {}).setdefault(r["kind"], []).append(r["accuracy"])
    for e, k in by_eps.items():
        clean, robust = k["clean"][0], k["robust"][0]
        top = max(k.get("certified", [0.0]))
        if not (top <= robust <= min(k.get("attack", [clean])) <= clean):
            raise AssertionError(f"{name}, eps {e:g}: certified {top} <= robust {robust} <= "
                                 f"attacks {k.get('attack')} <= clean {clean} fails")


def remeasure(name: str, data_root: str | None, device: str = "cpu", notes: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Re-measure card ``name`` with today's default protocol for its data set and eps
    (:func:`default_protocol`: the full default suite) and rewrite its measured fields
    (clean accuracy, results, warnings, protocol, date, versions; ``notes`` when given),
    atomically. Training fields and weights are kept. For maintainers, after a change to
    the protocol or the attacks. Returns the new card."""
    c = registry.card(name)
    eps = (c["training"].get("defense_params") or {}).get("eps") or c["protocol"]["eps"][0]
    protocol = default_protocol(c["dataset"], eps)
    if c["dataset"] != "digits":
        protocol["eps"] = list(c["protocol"]["eps"])
    t0 = time.perf_counter()
    m = measure(registry.load_bounded(name), c["dataset"], data_root, protocol, device,
                progress=progress)
    c.update(clean_accuracy=m["clean_accuracy"], n_test=m["n_test"], results=m["results"],
             warnings=m["warnings"],
             protocol=protocol | {"measure_seconds": round(time.perf_counter() - t0, 1)},
             date=datetime.date.today().isoformat(), versions=versions())
    c.pop("bounds_measured", None)
    if notes is not None:
        c["notes"] = notes
    write_text(CARDS_DIR / f"{name}.json", json.dumps(c, indent=1) + "\n")
    _cards.cache_clear()
    return c


def refresh_bounds(name: str, data_root: str | None, device: str = "cpu",
                   progress: bool = True) -> list[str]:
    """Re-measure the bound columns (``kind == "certified"``) of card ``name`` with its
    protocol and write them to the card (atomically); attack columns do not depend on
    the bounds and are kept. For use after a change to the bound methods.

    Returns the changed numbers (empty: none). Raises ``ValueError`` (card untouched)
    if a new verified accuracy exceeds the card's worst-case attack accuracy.
    """
    c = registry.card(name)
    proto = c["protocol"]
    bnet = registry.load_bounded(name).to(device).eval()
    x, y = test_subset(c["dataset"], data_root, proto["n"], proto["subset_seed"])
    threads = torch.get_num_threads()
    torch.set_num_threads(proto.get("threads", threads))
    try:
        res = attacks.evaluate(bnet, (x, y), attacks=[],
                               config=eval_config(proto, device=device, progress=progress,
                                                  run_sanity_checks=False))
    finally:
        torch.set_num_threads(threads)
    new = {(float(r["eps"]), r["attack"]): {k: r["attack" if k == "column" else k]
                                             for k in ROW_KEYS}
           for r in res if r["kind"] == "certified"}
    robust = {float(r["eps"]): r["accuracy"] for r in c["results"] if r["kind"] == "robust"}
    changed, rows = [], []
    for r in c["results"]:
        key = (float(r["eps"]), r["column"])
        if key in new:
            if new[key]["accuracy"] > robust[key[0]] + 1e-12:
                raise ValueError(f"{name}: eps {key[0]:g} {key[1]} "
                                 f"{fmt_percent(new[key]['accuracy'])} exceeds the worst-case "
                                 f"attack {fmt_percent(robust[key[0]])}")
            if new[key] != r:
                changed.append(f"eps {key[0]:g} {key[1]}: {fmt_percent(r['accuracy'])} -> "
                               f"{fmt_percent(new[key]['accuracy'])}")
            r = new[key]
        rows.append(r)
    if changed:
        today = datetime.date.today().isoformat()
        c["results"] = rows
        c["bounds_measured"] = {"date": today, "versions": versions()}
        write_text(CARDS_DIR / f"{name}.json", json.dumps(c, indent=1) + "\n")
        _cards.cache_clear()
    return changed


def headline(card: dict[str, Any], eps: float | None = None) -> dict[str, Any]:
    """One line of a card: clean (full test set), worst-case attack and best verified accuracy
    at ``eps`` (default: the defense's training eps if the protocol has it, else the middle eps
    of the protocol), in % of the subset."""
    eps_all = sorted({float(r["eps"]) for r in card["results"]})
    train_eps = (card["training"].get("defense_params") or {}).get("eps")
    if eps is None:
        eps = train_eps if train_eps in eps_all else eps_all[len(eps_all) // 2]
    cells = {r["column"]: r for r in card["results"] if abs(float(r["eps"]) - eps) < 1e-12}
    certified = {k: v for k, v in cells.items() if v["kind"] == "certified"}
    best = max(certified.values(), key=lambda r: r["accuracy"]) if certified else None
    return {"name": card["name"], "defense": card["defense"],
            "encoding": card["certify"]["encoding"], "eps": eps,
            "clean %": percent(card["clean_accuracy"]), "n_test": card["n_test"],
            "worst-case attack %": percent(cells["robust"]["accuracy"]),
            "verified %": percent(best["accuracy"]) if best else None,
            "verified by": attacks.certified_method(best["column"]) if best else None,
            "n": cells["robust"]["n"],
            # of the worst case's breaks, the ties only (None: measured before tie counts)
            "ties only %": percent(cells["robust"]["ties"] / cells["robust"]["n"])
            if "ties" in cells["robust"] else None,
            "flag": "GRADIENT MASKING"
            if attacks.checks.flags_masking(card.get("warnings", []), eps) else ""}
