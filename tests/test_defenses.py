"""Defenses on one loop: every defense trains, checkpoints reload, resume and DDP reproduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import snntorch as snn
import torch
from torch import nn

from snncertify import certify
from snncertify.training import train_model
from snncertify.training.archs import ARCHS, build_arch
from snncertify.training.checkpoint import load_checkpoint
from snncertify.training.cli import main as train_main
from snncertify.training.datasets import make_loader
from snncertify.training.defenses import DEFENSES, Certified, Hire, Stable, make_defense
from snncertify.training.loop import Trainer, evaluate

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"dataset": "digits", "limit": 96, "test_limit": 64, "batch_size": 32,
         "progress": False, "steps": 4}


def weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(Path(folder) / "model.pt", weights_only=True)


@pytest.mark.parametrize("method,kw", [
    ("clean", {}), ("hire", {"eps": 0.1}), ("stable", {"eps": 0.1}),
    ("pgd-at", {"eps": 0.1, "pgd_steps": 2, "ramp": 0.0}), ("ibp", {"eps": 0.1, "ramp": 0.0}),
    ("crown-ibp", {"eps": 0.1, "ramp": 0.0, "cert_steps": 2}),
])
def test_every_defense_trains_and_reloads(tmp_path, method, kw):
    torch.manual_seed(0)
    start = {k: v.clone() for k, v in build_arch("digits-fc").state_dict().items()}
    bnet, cfg = train_model(method, epochs=1, out=tmp_path, **SMALL, **kw)
    after = weights(tmp_path)
    assert set(after) == set(start)
    assert any(not torch.equal(after[k], start[k]) for k in start)  # it trained
    assert all(torch.isfinite(v).all() for v in after.values())
    assert all(torch.isfinite(torch.tensor(cfg["history"]["loss"])))
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["defense"] == ("certified" if method in ("ibp", "crown-ibp") else method)
    assert stored["certify"]["num_steps"] == 4 and stored["arch"] == "digits-fc"
    for key in ("versions", "neurons", "defense_params", "seed", "metrics", "dataset"):
        assert key in stored
    # the checkpoint rebuilds the same model: the same clean accuracy, bit for bit
    again, _ = load_checkpoint(tmp_path)
    test = make_loader("digits", None, False, 256, limit=64)
    assert evaluate(again, test) == stored["metrics"]["clean_accuracy"]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_resume_continues_exactly(tmp_path):
    """Stopped after epoch 1 of 2 and resumed: the same weights as the uninterrupted run."""
    loader = make_loader("digits", None, True, 32, limit=64)

    def trainer(out):
        torch.manual_seed(0)
        return Trainer(certify(build_arch("digits-fc"), 4), Certified(0.1), epochs=2, seed=0,
                       out=out, progress=False)

    straight = trainer(tmp_path / "a")
    straight.fit(loader)
    first = trainer(tmp_path / "b")
    first.fit(loader, until=1)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["epochs_done"] == 1
    resumed = trainer(tmp_path / "b")  # a fresh process would start from new weights
    resumed.fit(loader, resume=True)
    for k, v in straight.bnet.net.state_dict().items():
        assert torch.equal(v, resumed.bnet.net.state_dict()[k]), k
    # and the high-level API is deterministic under its seed
    train_model("clean", epochs=1, out=tmp_path / "c", **SMALL)
    train_model("clean", epochs=1, out=tmp_path / "d", **SMALL)
    for k, v in weights(tmp_path / "c").items():
        assert torch.equal(v, weights(tmp_path / "d")[k])


def test_resume_refuses_other_settings(tmp_path):
    train_model("clean", epochs=1, out=tmp_path, **SMALL)
    with pytest.raises(ValueError, match="defense"):
        train_model("ibp", eps=0.1, epochs=2, out=tmp_path, resume=True, **SMALL)
    with pytest.raises(FileNotFoundError, match="resume"):
        train_model("clean", epochs=1, out=tmp_path / "none", resume=True, **SMALL)


def test_stable_mppd_and_hire_noise_change_the_loss_as_specified():
    torch.manual_seed(0)
    bnet = certify(build_arch("digits-fc"), 4)
    x, y = torch.rand(8, 64), torch.randint(0, 10, (8,))
    same = Stable(perturb="gaussian", sigma=0.0, chi=0.3, rho=5.0)
    ce = nn.functional.cross_entropy(10 * bnet(x), y)
    assert torch.allclose(same.loss(bnet, x, y, None, 0.0), ce)  # x~ = x: MPPD = 0
    noisy = Stable(perturb="gaussian", sigma=0.3, chi=1.0, rho=1.0)
    assert noisy.loss(bnet, x, y, None, 0.0) > ce  # chi = 1: CE(x) + MPPD > CE(x)
    seen = []

    def step(xp, yb, noise, progress, period):
        seen.append((period, xp.detach().clone()))
        loss = Hire(eps=0.1).loss(bnet, xp, yb, noise, progress, period=period)
        loss.backward()
        return float(loss.detach())

    Hire(eps=0.1, periods=2).train_batch(step, x, y, None, 0.0)
    (p0, x0), (p1, x1) = seen
    assert (p0, p1) == (0, 1) and torch.equal(x0, x)
    d = x1 - x
    assert d.abs().max() <= 0.1 + 1e-6 and d.abs().max() > 0  # crafted from the 1st period's grad
    with pytest.raises(ValueError, match="divisible"):
        Hire(periods=3).loss(bnet, x, y, None, 0.0)


def test_certified_schedule_ramps_and_bad_settings_are_errors():
    c = Certified(0.2, warmup=0.1, ramp=0.5, kappa_end=0.0)
    assert c.schedule(0.05) == (0.0, 1.0)
    eps, kappa = c.schedule(0.1 + 0.9 * 0.25)
    assert abs(eps - 0.1) < 1e-9 and abs(kappa - 0.5) < 1e-9
    assert c.schedule(0.99) == (0.2, 0.0)
    assert set(DEFENSES) == {"clean", "hire", "stable", "pgd-at", "certified"}
    with pytest.raises(ValueError, match="unknown defense"):
        make_defense("madry")
    with pytest.raises(ValueError, match="needs --eps"):
        train_model("pgd-at", **SMALL)
    with pytest.raises(ValueError, match="does not apply"):
        train_model("clean", periods=3, **SMALL)
    event = certify(nn.Sequential(nn.Flatten(), nn.Linear(8, 3), snn.Leaky(0.9, init_hidden=True)),
                    None, encoding="event")
    frames = (torch.rand(4, 2, 8) < 0.5).float()
    for d in (make_defense("pgd-at", eps=0.1), make_defense("stable"), make_defense("hire")):
        with pytest.raises(ValueError, match="event"):
            d.loss(event, frames, torch.tensor([0, 1]), None, 0.5)


def test_named_architectures_are_plain_snntorch():
    for name, spec in ARCHS.items():
        net = build_arch(name)
        assert type(net) is nn.Sequential
        assert all(m.__module__.startswith(("torch.nn", "snntorch")) for m in net.modules())
        bnet = certify(net, 2, encoding="event" if name.startswith("nmnist") else "direct")
        x = torch.rand(2, *spec.input_shape)
        if bnet.encoding.name == "event":
            x = (torch.rand(2, 2, *spec.input_shape) < 0.3).float()
        assert bnet(x).shape == (2, 10)
    paper = build_arch("mnist-fc")
    leaky = [m for m in paper if isinstance(m, snn.Leaky)]
    assert [m.reset_mechanism for m in leaky] == ["zero"] * 3
    assert [tuple(m.weight.shape) for m in paper if isinstance(m, nn.Linear)] == [
        (512, 784), (256, 512), (10, 256)]


def test_cli_writes_a_run(tmp_path, capsys):
    cfg = train_main(["--method", "clean", "--epochs", "1", "--limit", "64", "--test-limit", "32",
                      "--steps", "3", "--out", str(tmp_path)])
    assert "clean accuracy" in capsys.readouterr().out
    assert cfg["command"].startswith("python -m snncertify.train --method clean")
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "config.json").is_file()


# --------------------------------------------------------------------- DDP
# A spike is a threshold of a float sum: a DDP rank's half batch and a single process's
# full batch round differently (batch-size-dependent matmul kernels, all-reduce order),
# so whole trajectories may differ by a flipped spike on some CPUs. The property DDP
# must hold is checked instead, in float64, where rounding cannot reach a threshold:
# every rank's gradient of step 1 is the mean over ranks of grad(n_r W / N * loss_r),
# each shard's gradient computed here with the rank's shapes, which is the global
# batch's mean gradient. (The loss is weighted before the backward, as the Trainer does:
# snnTorch's surrogates take their incoming gradient in float32, so weighting after the
# backward would differ in float32 rounding.)
DDP_N = 33  # shards of 17 and 16 samples: an unweighted mean is wrong by ~1/66 of g0 - g1


def _ddp_problem():
    from snncertify.training.datasets import load_digits_split

    torch.manual_seed(0)
    bnet = certify(build_arch("digits-fc").double(), 4)
    x, y, _, _ = load_digits_split()
    return bnet, x[:DDP_N].double(), y[:DDP_N], Certified(0.1, "ibp", ramp=0.0)


def _ddp_rank(rank: int, world: int, store: str, out: str) -> None:
    """One gloo rank: one Trainer step on the global batch; saves its gradient and weights."""
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        bnet, x, y, defense = _ddp_problem()
        trainer = Trainer(bnet, defense, epochs=1, schedule="constant", progress=False)
        seen, step = [], trainer.opt.step

        def record(*a, **k):
            seen.append([p.grad.detach().clone() for p in bnet.parameters()])
            return step(*a, **k)

        trainer.opt.step = record
        trainer.fit(DataLoader(TensorDataset(x, y), batch_size=DDP_N))  # one global batch
        torch.save({"grad": seen[0], "weights": [p.detach() for p in bnet.parameters()]},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_all_reduces_the_global_batch_mean_gradient(tmp_path):
    """2 gloo processes (float64, IBP certified loss): every rank's gradient of step 1 is
    the mean of the share-weighted shard gradients, and both ranks end with the same weights."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    bnet, x, y, defense = _ddp_problem()
    params = list(bnet.parameters())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' shapes and threads: their forwards, bit for bit
    try:
        shards = [torch.autograd.grad(defense.loss(bnet, xs, ys, None, 0.0) * len(ys) * 2 / DDP_N,
                                      params)
                  for xs, ys in zip(x.tensor_split(2), y.tensor_split(2), strict=True)]
    finally:
        torch.set_num_threads(threads)
    expect = [(a + b) / 2 for a, b in zip(*shards, strict=True)]
    assert any(not torch.allclose(shards[0][i], shards[1][i], rtol=1e-3)
               for i in range(len(params)))  # the shards differ: an unweighted mean would show
    for r, got in enumerate(ranks):
        for i, (g, e) in enumerate(zip(got["grad"], expect, strict=True)):
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=f"rank {r}, param {i}")
    for a, b in zip(ranks[0]["weights"], ranks[1]["weights"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)  # replicas stay in sync


def test_ddp_through_torchrun_trains_and_records_the_world(tmp_path):
    """The CLI under torchrun (2 CPU processes, gloo): it trains, writes one checkpoint
    and records world_size 2 (what DDP computes is checked by the test above)."""
    args = ["--method", "ibp", "--eps", "0.1", "--ramp", "0", "--epochs", "1", "--limit", "96",
            "--test-limit", "16", "--batch-size", "32", "--steps", "3", "--threads", "1",
            "--schedule", "constant"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "snncertify.train", *args, "--out", str(tmp_path / "ddp")]
    res = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    torch.manual_seed(0)  # the CLI's initial weights (--seed 0)
    ddp, start = weights(tmp_path / "ddp"), build_arch("digits-fc").state_dict()
    assert set(ddp) == set(start)
    for k in ddp:
        assert torch.isfinite(ddp[k]).all(), k
        if k.endswith(("weight", "bias")):  # the Linear layers trained
            assert not torch.equal(ddp[k], start[k]), k
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2 and len(cfg["history"]["loss"]) == 1


def test_certified_robust_losses_mix_and_fuse_as_configured():
    torch.manual_seed(0)
    bnet = certify(build_arch("digits-fc"), 4)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 64, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    mixed = Certified(0.1, "crown-ibp", ramp=0.5, kappa_end=0.0, linear_end=0.0)
    ibp = Certified(0.1, "ibp", ramp=0.5, kappa_end=0.0)
    linear = Certified(0.1, "crown-ibp", ramp=0.5, kappa_end=0.0)
    assert mixed.linear_weight(0.0) == 1.0 and mixed.linear_weight(0.25) == 0.5
    assert mixed.linear_weight(0.9) == 0.0 and linear.linear_weight(0.9) == 1.0
    with torch.no_grad():
        # past the ramp the mix is IBP training exactly; half-way, the mean of the two bounds
        assert torch.equal(mixed.loss(bnet, x, y, None, 0.9), ibp.loss(bnet, x, y, None, 0.9))
        half = mixed.loss(bnet, x, y, None, 0.25)
        both = 0.5 * ibp.loss(bnet, x, y, None, 0.25) + 0.5 * linear.loss(bnet, x, y, None, 0.25)
        assert torch.allclose(half, both, rtol=1e-6)
        fused = Certified(0.1, "crown-ibp", kappa_end=0.0, robust_loss="fused", ramp=0.0)
        assert fused.loss(bnet, x, y, None, 0.9) <= ibp.loss(bnet, x, y, None, 0.9) + 1e-5
    for bad in ({"method": "ibp", "linear_end": 0.5}, {"linear_end": 1.5},
                {"robust_loss": "fused", "method": "ibp"}, {"fused_rows": 2},
                {"robust_loss": "fused", "fused_rows": -1}):
        with pytest.raises(ValueError):
            Certified(0.1, **({"method": "crown-ibp"} | bad))
