"""Train an SNN with one of the defenses: ``python -m snncertify.train`` and :func:`train_model`.

    python -m snncertify.train --method certified --dataset mnist --arch mnist-fc \\
        --eps 0.1 --steps 10 --epochs 20 --data-root DIR --out runs/mnist-fc-ibp

``--method``: ``clean``, ``hire``, ``stable``, ``pgd-at``, ``certified`` (and the
aliases ``ibp`` / ``crown-ibp`` for certified training with that bound method).
The run folder gets ``model.pt`` (weights only) and ``config.json`` (everything
needed to rebuild and re-measure the model, with the measured clean test
accuracy); ``--resume`` continues an interrupted run. Under ``torchrun`` the
same command trains with DistributedDataParallel (gloo on CPU, nccl on CUDA);
``--batch-size`` is then the GLOBAL batch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import certify
from .report import fmt_percent
from .training.archs import ARCHS, build_arch
from .training.datasets import DATASETS, make_loader
from .training.defenses import DEFENSES, make_defense
from .training.loop import Trainer, evaluate

DEFAULT_ARCH = {"digits": "digits-fc", "mnist": "mnist-fc", "fashion-mnist": "mnist-fc",
                "cifar10": "cifar-conv", "nmnist": "nmnist-fc"}
ALIASES = {"ibp": ("certified", "ibp"), "crown-ibp": ("certified", "crown-ibp")}

#: defense -> {keyword of train_model: keyword of the defense}
_DEFENSE_ARGS = {
    "clean": {"logit_scale": "logit_scale"},
    "certified": {"eps": "eps", "bound_method": "method", "kappa_end": "kappa_end",
                  "ramp": "ramp", "warmup": "warmup", "cert_steps": "cert_steps",
                  "logit_scale": "logit_scale"},
    "pgd-at": {"eps": "eps", "pgd_steps": "steps", "step_size": "step_size", "grad": "grad",
               "ramp": "ramp", "logit_scale": "logit_scale"},
    "stable": {"eps": "eps", "perturb": "perturb", "sigma": "sigma", "chi": "chi", "rho": "rho",
               "grad": "grad", "logit_scale": "logit_scale"},
    "hire": {"eps": "eps", "periods": "periods", "step_size": "step", "logit_scale": "logit_scale"},
}


def _setup_distributed(device: str | None) -> str:
    """Join the torchrun process group when launched by torchrun; returns the device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device or "cpu"
    cuda = (device or "cpu").startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def train_model(
    method: str, dataset: str = "digits", arch: str | None = None, eps: float | None = None,
    steps: int | None = None, epochs: int = 10, data_root: str | None = None,
    out: str | Path | None = None, batch_size: int = 64, lr: float = 1e-3,
    encoding: str | None = None, readout: str = "rate", seed: int = 0, device: str | None = None,
    resume: bool = False, limit: int | None = None, test_limit: int | None = None,
    schedule: str = "cosine", weight_decay: float = 0.0, grad_clip: float | None = None,
    workers: int = 0, progress: bool = True, neuron: dict[str, Any] | None = None,
    command: str | None = None, **defense_kw,
) -> tuple[Any, dict[str, Any]]:
    """Train ``arch`` on ``dataset`` with the defense ``method``; returns ``(bnet, config)``.

    ``defense_kw``: the defense's options (``bound_method``, ``kappa_end``, ``ramp``,
    ``warmup``, ``cert_steps``, ``pgd_steps``, ``step_size``, ``grad``, ``perturb``,
    ``sigma``, ``chi``, ``rho``, ``periods``, ``logit_scale``); None values keep the
    defense's defaults, an option the defense does not take is an error.
    """
    if method in ALIASES:
        method, bound = ALIASES[method]
        if defense_kw.get("bound_method") not in (None, bound):
            raise ValueError(f"--method {bound} conflicts with --bound-method "
                             f"{defense_kw['bound_method']}")
        defense_kw["bound_method"] = bound
    if method not in DEFENSES:
        raise ValueError(f"unknown method {method!r}; known: {sorted([*DEFENSES, *ALIASES])}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
    arch = arch or DEFAULT_ARCH[dataset]
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    info, spec = DATASETS[dataset], ARCHS[arch]
    if tuple(spec.input_shape) != tuple(info.input_shape) and not (
            len(spec.input_shape) == 3 and spec.input_shape[1:] == info.input_shape[1:]):
        raise ValueError(f"architecture {arch!r} takes inputs {list(spec.input_shape)}, "
                         f"data set {dataset!r} gives {list(info.input_shape)}")
    kwargs = {}
    allowed = _DEFENSE_ARGS[method]
    for key, value in defense_kw.items():
        if value is None:
            continue
        if key not in allowed:
            raise ValueError(f"option {key!r} does not apply to the {method!r} defense "
                             f"(it takes {sorted(allowed)})")
        kwargs[allowed[key]] = value
    if eps is not None:
        if "eps" not in allowed:
            raise ValueError(f"--eps does not apply to the {method!r} defense")
        kwargs["eps"] = eps
    elif method in ("certified", "pgd-at"):
        raise ValueError(f"the {method!r} defense needs --eps")
    defense = make_defense(method, **kwargs)

    device = _setup_distributed(device)
    steps = steps or spec.num_steps
    encoding = encoding or info.encoding
    torch.manual_seed(seed)
    neuron = {k: v for k, v in (neuron or {}).items() if v is not None}
    net = build_arch(arch, **neuron)
    bnet = certify(net, steps, encoding=encoding, readout=readout, seed=seed)
    train = make_loader(dataset, data_root, True, batch_size, seed=seed, num_steps=steps,
                        limit=limit, num_workers=workers)
    test = make_loader(dataset, data_root, False, 256, num_steps=steps, limit=test_limit,
                       num_workers=workers)
    config = {"dataset": dataset, "arch": arch, "neuron": neuron, "train_samples": len(train.dataset),
              "batch_size": batch_size, "command": command}
    trainer = Trainer(bnet, defense, epochs, lr, schedule, weight_decay, grad_clip, seed, device,
                      out, config, progress)
    trainer.fit(train, None, resume=resume)
    cfg = trainer.config()
    if trainer.rank == 0:
        cfg["metrics"] = {"clean_accuracy": evaluate(bnet, test, device), "n_test": len(test.dataset),
                          "epoch_seconds_mean": sum(cfg["history"]["epoch_seconds"])
                          / max(len(cfg["history"]["epoch_seconds"]), 1)}
        trainer.extra["metrics"] = cfg["metrics"]
        trainer.save()
    return bnet, cfg


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m snncertify.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=sorted([*DEFENSES, *ALIASES]))
    p.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    p.add_argument("--arch", choices=sorted(ARCHS), help="default: the data set's")
    p.add_argument("--eps", type=float, help="L-inf radius of the defense (input units, [0, 1])")
    p.add_argument("--steps", type=int, help="time steps T (default: the architecture's)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--encoding", choices=["direct", "rate", "event"])
    p.add_argument("--readout", default="rate", choices=["rate", "count", "membrane"])
    p.add_argument("--data-root", help="folder with the data set (see the README's layouts)")
    p.add_argument("--out", required=True, help="run folder (model.pt, config.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--limit", type=int, help="train on the first N training samples only")
    p.add_argument("--test-limit", type=int, help="measure on the first N test samples only")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    g = p.add_argument_group("neurons (override the architecture's)")
    g.add_argument("--beta", type=float)
    g.add_argument("--threshold", type=float)
    g.add_argument("--reset", choices=["subtract", "zero", "none"])
    d = p.add_argument_group("defense options (None: the defense's default)")
    d.add_argument("--bound-method", choices=["ibp", "crown-ibp"], help="certified")
    d.add_argument("--kappa-end", type=float, help="certified: final weight of the clean loss")
    d.add_argument("--ramp", type=float, help="certified, pgd-at: fraction of training to ramp eps")
    d.add_argument("--warmup", type=float, help="certified: clean-only fraction before the ramp")
    d.add_argument("--cert-steps", type=int, help="certified: time steps of the bound term")
    d.add_argument("--pgd-steps", type=int, help="pgd-at: PGD iterations")
    d.add_argument("--step-size", type=float, help="pgd-at: PGD step; hire: noise step")
    d.add_argument("--grad", help="pgd-at, stable: gradient mode (bptt, rate, surrogate:NAME)")
    d.add_argument("--perturb", choices=["fgsm", "gaussian"], help="stable: x~")
    d.add_argument("--sigma", type=float, help="stable: Gaussian std")
    d.add_argument("--chi", type=float, help="stable: weight of CE(x)")
    d.add_argument("--rho", type=float, help="stable: weight of MPPD")
    d.add_argument("--periods", type=int, help="hire: periods the T steps are split into")
    d.add_argument("--logit-scale", type=float, help="logits = scale * spike rates")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    command = "python -m snncertify.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    _, cfg = train_model(
        a.method, a.dataset, a.arch, a.eps, a.steps, a.epochs, a.data_root, a.out, a.batch_size,
        a.lr, a.encoding, a.readout, a.seed, a.device, a.resume, a.limit, a.test_limit,
        a.schedule, a.weight_decay, a.grad_clip, a.workers, True,
        {"beta": a.beta, "threshold": a.threshold, "reset": a.reset}, command,
        bound_method=a.bound_method, kappa_end=a.kappa_end, ramp=a.ramp, warmup=a.warmup,
        cert_steps=a.cert_steps, pgd_steps=a.pgd_steps, step_size=a.step_size, grad=a.grad,
        perturb=a.perturb, sigma=a.sigma, chi=a.chi, rho=a.rho, periods=a.periods,
        logit_scale=a.logit_scale,
    )
    if "metrics" in cfg:
        m = cfg["metrics"]
        print(f"{cfg['defense']} on {cfg['dataset']} ({cfg['arch']}): clean accuracy "
              f"{fmt_percent(m['clean_accuracy'])} of {m['n_test']} test samples; "
              f"{m['epoch_seconds_mean']:.1f} s/epoch; saved to {a.out}")
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return cfg


if __name__ == "__main__":
    main()
