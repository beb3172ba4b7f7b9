"""Margin-by-margin comparison with the official S-CROWN / S-IBP of Liang et al. (2022).

Setting of the paper's public code (github.com/liangling76/certify_snn): MNIST
FC 784-512-256-10, rate input (spikes ``x > r``, r uniform), zero reset,
beta = threshold = 0.25, spike-rate readout, T = 10 (training and
certification), L-inf eps 0.06, on the official certified-trained checkpoint.

The official model (imported from a checkout of certify_snn, run on CPU) and
the same network as an unmodified snnTorch ``nn.Sequential`` wrapped by
``snncertify.certify(net, num_steps=T, encoding="rate")`` see ONE noise draw
per image: the official code's ``torch.rand`` (``snn_model.py``, forward and
``snn_bound``) is replaced, during its calls only, by that draw, and its
``.cuda()`` calls by the identity. The official box
``[1[x-eps > r], 1[x+eps > r]]`` (no clipping) equals ours
(``x -+ eps`` clipped to [0, 1]) because ``r`` lies in [0, 1); the
benchmark checks it, and that the two forward passes and the two S-IBPs agree.

For every margin ``score_y - score_j`` (``j != y``) it reports the official
S-IBP and S-CROWN lower bounds and ours (``bnet.margin_bounds``) for each of
``--methods``; verified accuracy (ours: every margin STRICTLY > 0; the
official rule counts a margin of exactly 0 as verified, shown separately);
the fractions of margins where the official bound is tighter than ours by
more than the rounding tolerance ``rtol * (1 + |official|)``, within it, or
looser; statistics of ``ours - official``; and the median time per batch.
Our bounds subtract a small float-rounding slack (``certify(slack=1e-5)``);
``crown-ibp@slack0`` (the same bound without it: NOT sound against rounding,
a diagnostic only) shows how much of a gap that slack explains.

    python benchmarks/bench_official.py --official-code /path/to/certify_snn \\
        --checkpoint ../shared/data/official/mnist_fc_rate_eps0.06.pth.tar \\
        --data-root ../shared/data --n 1000 [--out runs/official]

Get the official code with ``git clone https://github.com/liangling76/certify_snn``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import snncertify
from snncertify import encoding as enc
from snncertify.report import to_markdown, write_csv, write_markdown
from snncertify.threat import LinfBall
from snncertify.training.archs import build_arch

CHEAP = ("ibp", "crown-ibp")
OFFICIAL_FILES = ("snn_model.py", "snn_bound_layers.py", "snn_fire.py")
CLONE_HINT = "git clone https://github.com/liangling76/certify_snn"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-code", required=True,
                   help=f"a checkout of certify_snn (get it with: {CLONE_HINT})")
    p.add_argument("--checkpoint", default="../shared/data/official/mnist_fc_rate_eps0.06.pth.tar",
                   help="official MNIST FC state_dict (fc1, fc2, fc3)")
    p.add_argument("--data-root", default="../shared/data", help="torchvision MNIST root")
    p.add_argument("--n", type=int, default=1000, help="first N MNIST test images")
    p.add_argument("--eps", type=float, default=0.06, help="L-inf radius")
    p.add_argument("--steps", type=int, default=10, help="time steps T (forward and certification)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--methods", default="ibp,crown-ibp",
                   help="our methods, comma separated (ibp and crown-ibp always run; others, "
                        "e.g. crown, alpha-crown, only on the first --subset-n images)")
    p.add_argument("--subset-n", type=int, default=20, help="images for the expensive methods")
    p.add_argument("--seed", type=int, default=0, help="seed of the shared noise draw")
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="rounding tolerance: a gap within rtol*(1+|official|) counts as equal")
    p.add_argument("--examples", type=int, default=10, help="examples of official-tighter margins")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="optional output folder (CSV + Markdown)")
    return p.parse_args(argv)


# ------------------------------------------------------------------ official code
def import_official(code_dir: str):
    """``(snn_fire, snn_bound_layers, snn_model)`` imported from a certify_snn checkout."""
    root = Path(code_dir).expanduser().resolve()
    missing = [f for f in OFFICIAL_FILES if not (root / f).is_file()]
    if missing:
        sys.exit(f"error: --official-code {code_dir!r} is not a checkout of certify_snn "
                 f"(missing {', '.join(missing)}).\nGet it with:\n    {CLONE_HINT}\n"
                 "and pass its folder as --official-code.")
    sys.path.insert(0, str(root))
    import snn_bound_layers  # noqa: PLC0415
    import snn_fire  # noqa: PLC0415
    import snn_model  # noqa: PLC0415
    torch.set_printoptions(profile="default")  # snn_model changes the print options on import
    return snn_fire, snn_bound_layers, snn_model


@contextmanager
def official_env(noise: torch.Tensor | None = None):
    """During official calls: ``.cuda()`` is the identity (CPU), and ``torch.rand``
    returns ``noise`` (the shared draw; any other draw is an error)."""
    rand, cuda = torch.rand, torch.Tensor.cuda

    def fake_rand(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        if noise is None or tuple(shape) != tuple(noise.shape):
            raise RuntimeError(f"unexpected official torch.rand{tuple(shape)}; shared noise is "
                               f"{None if noise is None else tuple(noise.shape)}")
        return noise.clone()

    torch.rand = fake_rand
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.rand, torch.Tensor.cuda = rand, cuda


def build_official(mods, state: dict, steps: int):
    snn_fire, sbl, snn_model = mods
    if abs(snn_fire.m_th - 0.25) > 0 or abs(snn_fire.alpha - 0.25) > 0:
        sys.exit(f"official snn_fire has threshold {snn_fire.m_th}, decay {snn_fire.alpha}; "
                 "expected 0.25, 0.25")
    for m in mods:  # forward uses `time_step`, bounds `time_step_certify`
        m.time_step = steps
    snn_fire.set_time_step_certify(steps)
    with official_env():
        model = snn_model.MNIST_FC()
    model.load_state_dict(state, strict=True)
    model.get_para()
    return model.eval()


# ------------------------------------------------------------------ our network
def build_ours(state: dict, steps: int, slack: float | None = None):
    net = build_arch("mnist-fc")  # Flatten, Linear, Leaky, Linear, Leaky, Linear, Leaky
    with torch.no_grad():
        for name, pos in (("fc1", 1), ("fc2", 3), ("fc3", 5)):
            lin = net[pos]
            for part in ("weight", "bias"):
                src = state[f"{name}.{part}"]
                if tuple(src.shape) != tuple(getattr(lin, part).shape):
                    sys.exit(f"shape mismatch {name}.{part}: {tuple(src.shape)} vs "
                             f"{tuple(getattr(lin, part).shape)}")
                getattr(lin, part).copy_(src)
    for pos in (2, 4, 6):
        lk = net[pos]
        assert float(lk.beta) == 0.25 and float(lk.threshold) == 0.25
        assert lk.reset_mechanism == "zero"
    net.eval()
    kw = {} if slack is None else {"slack": slack}
    return net, snncertify.certify(net, num_steps=steps, encoding="rate", **kw)


def load_mnist(root: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision  # noqa: PLC0415

    try:
        ds = torchvision.datasets.MNIST(root, train=False, download=False)
    except RuntimeError as e:
        sys.exit(f"error: MNIST not found under {root!r} (torchvision layout): {e}")
    x = ds.data[:n].unsqueeze(1).float().div(255)  # == transforms.ToTensor()
    return x, ds.targets[:n].long()


def others(y: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Bool ``[B, K]``, False at the label: the official margin order (j != y, increasing)."""
    mask = torch.ones(len(y), k, dtype=torch.bool)
    mask[torch.arange(len(y)), y] = False
    return mask


def show(rows: list[dict]) -> str:
    """Markdown table for the console: small floats in scientific notation."""
    def fmt(k, v):
        if isinstance(v, float) and "%" in k:  # percentages: the format of every table
            return f"{v:.1f}"
        if isinstance(v, float) and v == v and v != 0 and abs(v) < 0.01:
            return f"{v:.2e}"
        return f"{v:.4f}" if isinstance(v, float) else v
    return to_markdown([{k: fmt(k, v) for k, v in r.items()} for r in rows])


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# ------------------------------------------------------------------ main
def run(args) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mods = import_official(args.official_code)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    print(f"checkpoint {args.checkpoint}: " + ", ".join(
        f"{k} {tuple(v.shape)}" for k, v in state.items()))
    official = build_official(mods, state, args.steps)
    _, bnet = build_ours(state, args.steps)
    _, bnet0 = build_ours(state, args.steps, slack=0.0)  # diagnostic only
    x_all, y_all = load_mnist(args.data_root, args.n)
    T, n = args.steps, len(y_all)
    gen = torch.Generator().manual_seed(args.seed)
    noise_all = torch.rand((n, T, *x_all.shape[1:]), generator=gen).transpose(0, 1)  # [T, N, ...]
    methods = list(dict.fromkeys(CHEAP + tuple(m for m in args.methods.split(",") if m)))
    unknown = set(methods) - set(snncertify.available_methods())
    if unknown:
        sys.exit(f"unknown method(s) {sorted(unknown)}; "
                 f"available: {snncertify.available_methods()}")
    print(f"N={n} eps={args.eps} T={T} batch={args.batch_size} seed={args.seed} "
          f"threads={args.threads} methods={methods} (expensive ones on the first "
          f"{min(args.subset_n, n)} images)")

    cols: dict[str, list[torch.Tensor]] = {}
    times: dict[str, list[float]] = {}
    checks = {"fwd_maxdiff": 0.0, "fwd_pred_agree": 0, "box_mismatch": 0,
              "ibp_maxdiff": 0.0, "ibp0_maxdiff": 0.0, "ibp_pair_maxdiff": 0.0}
    clean_off = clean_ours = 0

    def add(key, value, seconds=None):
        cols.setdefault(key, []).append(value)
        if seconds is not None:
            times.setdefault(key, []).append(seconds)

    with torch.no_grad():
        for start in range(0, n, args.batch_size):
            sl = slice(start, min(start + args.batch_size, n))
            xb, yb = x_all[sl], y_all[sl]
            nb = noise_all[:, sl].contiguous()
            # forward agreement on the clean input with the shared noise
            with official_env(nb):
                out_off = official(xb)
            out_ours = bnet(xb, noise=nb)
            checks["fwd_maxdiff"] = max(checks["fwd_maxdiff"],
                                        (out_off - out_ours).abs().max().item())
            checks["fwd_pred_agree"] += int((out_off.argmax(1) == out_ours.argmax(1)).sum())
            clean_off += int((out_off.argmax(1) == yb).sum())  # official: first max wins
            top = out_ours.max(1, keepdim=True).values
            clean_ours += int(((out_ours[torch.arange(len(yb)), yb] == top[:, 0])
                               & ((out_ours == top).sum(1) == 1)).sum())  # a tie is wrong
            # official S-IBP alone, then S-CROWN (which runs its S-IBP first)
            with official_env(nb):
                (_, off_ibp), t_ibp = timed(official.snn_bound, xb, args.eps, yb)
                s_u, s_l = official.s_U.clone(), official.s_L.clone()
                (off_crown, off_ibp2), t_crown = timed(
                    official.snn_crown_ibp, xb, args.eps, yb)
            lo, hi, _ = enc.encode_interval("rate", xb, LinfBall(args.eps), nb)
            checks["box_mismatch"] += int((lo != s_l).sum() + (hi != s_u).sum())
            checks["ibp_pair_maxdiff"] = max(checks["ibp_pair_maxdiff"],
                                             (off_ibp - off_ibp2).abs().max().item())
            add("off S-IBP", off_ibp, t_ibp)
            add("off S-CROWN", off_crown, t_crown)
            add("off best", torch.maximum(off_ibp, off_crown))
            for m in methods:
                if m not in CHEAP and start >= args.subset_n:
                    continue
                xs, ys, ns = (xb, yb, nb) if m in CHEAP else (
                    xb[: args.subset_n - start], yb[: args.subset_n - start],
                    nb[:, : args.subset_n - start])
                mb, t = timed(bnet.margin_bounds, xs, ys, args.eps, method=m, noise=ns)
                add(f"ours {m}", mb[others(ys)].view(len(ys), -1), t)
                mb0 = bnet0.margin_bounds(xs, ys, args.eps, method=m, noise=ns)
                add(f"ours {m}@slack0", mb0[others(ys)].view(len(ys), -1))
            checks["ibp_maxdiff"] = max(checks["ibp_maxdiff"],
                                        (cols["ours ibp"][-1] - off_ibp).abs().max().item())
            checks["ibp0_maxdiff"] = max(checks["ibp0_maxdiff"],
                                         (cols["ours ibp@slack0"][-1] - off_ibp).abs().max().item())
            print(f"  images {sl.start}-{sl.stop - 1}: official S-IBP {t_ibp:.3f}s S-CROWN "
                  f"{t_crown:.3f}s; ours " + " ".join(
                      f"{m} {times[f'ours {m}'][-1]:.3f}s" for m in methods
                      if m in CHEAP or start < args.subset_n), flush=True)

    M = {k: torch.cat(v) for k, v in cols.items()}  # each [N or subset, K-1]
    y_rep = y_all.unsqueeze(1).expand(n, 9)
    j_idx = torch.arange(10).expand(n, 10)[others(y_all)].view(n, 9)
    img = torch.arange(n).unsqueeze(1).expand(n, 9)

    print("\n== checks (shared noise, one draw per image) ==")
    print(f"forward spike rates, official vs ours: max |diff| = {checks['fwd_maxdiff']:.3g}; "
          f"argmax agrees on {checks['fwd_pred_agree']}/{n}")
    print(f"input spike box, official vs ours: {checks['box_mismatch']} mismatched bits")
    print(f"S-IBP margins, official vs ours: max |diff| = {checks['ibp_maxdiff']:.3g} "
          f"(ours with slack 0: {checks['ibp0_maxdiff']:.3g}); official S-IBP alone vs inside "
          f"its S-CROWN: {checks['ibp_pair_maxdiff']:.3g}")
    print(f"clean accuracy: official argmax {100 * clean_off / n:.1f}%, ours (tie = wrong) "
          f"{100 * clean_ours / n:.1f}%")

    # verified accuracy
    acc_rows = []
    for key, v in M.items():
        rows = len(v)
        official_key = key.startswith("off")
        t = times.get(key)
        acc_rows.append({
            "bound": key, "images": rows,
            "verified_%_strict(>0)": 100 * float((v > 0).all(1).float().mean()),
            "verified_%_official(>=0)": 100 * float((v >= 0).all(1).float().mean()),
            "rule": "official >= 0" if official_key else "ours > 0",
            "mean_margin_lb": float(v.mean()),
            "median_s_per_batch": statistics.median(t) if t else "",
        })
    print(f"\n== verified accuracy (N={n}, eps={args.eps:g}) ==")
    print(show(acc_rows))

    # margin-by-margin comparison
    pairs = [("ours ibp", "off S-IBP"), ("ours crown-ibp", "off best"),
             ("ours crown-ibp", "off S-CROWN")]
    pairs += [(f"ours {m}", "off best") for m in methods if m not in CHEAP]
    cmp_rows = []
    for ours_key, ref_key in pairs:
        a, a0 = M[ours_key], M[ours_key + "@slack0"]
        r = M[ref_key][: len(a)]
        d, d0 = a - r, a0 - r  # > 0: ours tighter
        tol = args.rtol * (1 + r.abs())
        beyond = (d < -tol) & (d0 < -tol)  # official tighter even without our rounding slack
        ours_t = d > tol
        cmp_rows.append({
            "ours": ours_key, "official": ref_key, "margins": d.numel(),
            "%_off_tighter>tol": 100 * float((d < -tol).float().mean()),
            "%_off_tighter_beyond_slack": 100 * float(beyond.float().mean()),
            "%_within_slack": 100 * float((~beyond & ~ours_t).float().mean()),
            "%_ours_tighter>tol": 100 * float(ours_t.float().mean()),
            "mean_diff": float(d.mean()), "median_diff": float(d.median()),
            "max_diff": float(d.max()), "min_diff": float(d.min()),
            "min_diff@slack0": float(d0.min()),
            "max_slack_deduction": float((a0 - a).max()),
        })
    print(f"== ours - official, per margin (diff > 0: ours tighter; "
          f"tol = {args.rtol:g}*(1+|official|)) ==\n"
          "   beyond_slack: official tighter than ours by > tol, also with our rounding slack "
          "removed (crown-ibp@slack0);\n   within_slack: the rest of the margins where ours "
          "is not tighter by > tol")
    print(show(cmp_rows))

    # margins where the official is tighter than our crown-ibp beyond the tolerance
    ex_rows = []
    for ours_key in ["ours crown-ibp"] + [f"ours {m}" for m in methods if m not in CHEAP]:
        a, a0 = M[ours_key], M[ours_key + "@slack0"]
        r = M["off best"][: len(a)]
        d, d0 = a - r, a0 - r
        tol = args.rtol * (1 + r.abs())
        for label, sel in (("beyond slack", (d < -tol) & (d0 < -tol)),
                           ("> tol, within slack", (d < -tol) & (d0 >= -tol))):
            bad = sel.nonzero()
            print(f"{ours_key}: official best(S-IBP, S-CROWN) tighter {label}: {len(bad)} margins")
            order = d[bad[:, 0], bad[:, 1]].argsort()
            for i, k in bad[order][: args.examples].tolist():
                ex_rows.append({
                    "ours": ours_key, "kind": label,
                    "image": int(img[i, k]), "y": int(y_rep[i, k]), "j": int(j_idx[i, k]),
                    "ours_value": float(a[i, k]), "ours@slack0": float(a0[i, k]),
                    "off_S_CROWN": float(M["off S-CROWN"][i, k]),
                    "off_S_IBP": float(M["off S-IBP"][i, k]),
                    "diff": float(d[i, k]), "diff@slack0": float(d0[i, k]),
                })
    if ex_rows:
        print(show(ex_rows))

    if args.out:
        out = Path(args.out)
        write_csv(acc_rows, out / "official_verified.csv")
        write_markdown(acc_rows, out / "official_verified.md",
                       title=f"Verified accuracy vs the official code "
                             f"(N={n}, eps={args.eps}, T={T})")
        write_csv(cmp_rows, out / "official_compare.csv")
        write_markdown(cmp_rows, out / "official_compare.md",
                       title="Ours - official, per margin (> 0: ours tighter)")
        margin_rows = []
        for i in range(n):
            for k in range(9):
                row = {"image": i, "y": int(y_rep[i, k]), "j": int(j_idx[i, k])}
                for key, v in M.items():
                    row[key] = float(v[i, k]) if i < len(v) else ""
                margin_rows.append(row)
        write_csv(margin_rows, out / "official_margins.csv")
        if ex_rows:
            write_csv(ex_rows, out / "official_tighter_examples.csv")
        print(f"wrote {out}/official_*.csv, *.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
