"""Training loops, atomic output files, report helpers and the quick-start job."""

from __future__ import annotations

import csv

import pytest
import torch
from tables import assert_percent_table

import snncertify
from snncertify.io import atomic_path, write_text
from snncertify.report import PlotOptions, pivot, plot_lines, to_markdown, write_csv, write_markdown
from snncertify.training import evaluate_accuracy, load_digits_split, train_certified, train_clean


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    write_text(target, "whole")
    assert target.read_text() == "whole"
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_report_writers_pivot_and_round_trip_the_rows(tmp_path):
    rows = [{"model": m, "eps": e, "column": c, "accuracy": a}
            for m in ("clean", "certified") for e in (0.0, 0.1)
            for c, a in (("clean", 0.9), ("certified (ibp)", 0.5 - e))]
    wide = pivot(rows, ("model", "eps"), "column", "accuracy")
    assert len(wide) == 4 and wide[1] == {"model": "clean", "eps": 0.1, "clean": 0.9,
                                          "certified (ibp)": 0.4}
    md = to_markdown(wide)
    assert md.splitlines()[0] == "| model | eps | clean | certified (ibp) |"
    assert "| clean | 0.1000 | 0.9000 | 0.4000 |" in md
    write_csv(rows, tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        back = list(csv.DictReader(f))
    assert [float(r["accuracy"]) for r in back] == [r["accuracy"] for r in rows]
    write_markdown(wide, tmp_path / "t.md", title="T")
    assert (tmp_path / "t.md").read_text().startswith("# T\n")
    png = plot_lines(rows, "eps", "accuracy", "column", tmp_path / "t.png",
                     PlotOptions(panel="model"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_is_deterministic_under_a_seed(quickstart):
    xtr, ytr, _, _ = load_digits_split()
    xtr, ytr = xtr[:256], ytr[:256]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        bnet = snncertify.certify(quickstart.build_net(), 4)
        hist = train_clean(bnet, xtr, ytr, epochs=2, seed=3, progress=False)
        runs.append((hist, [p.detach().clone() for p in bnet.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_certified_training_certifies_more_than_clean_training(quickstart):
    xtr, ytr, xte, yte = load_digits_split()
    results = {}
    for kind in ("clean", "certified"):
        torch.manual_seed(0)
        bnet = snncertify.certify(quickstart.build_net(), 6)
        if kind == "clean":
            train_clean(bnet, xtr, ytr, epochs=6, progress=False)
        else:
            train_certified(bnet, xtr, ytr, eps=0.05, epochs=6, progress=False)
        results[kind] = (evaluate_accuracy(bnet, xte, yte),
                         snncertify.verified_accuracy(bnet, xte, yte, 0.02))
    assert results["clean"][0] > 0.85 and results["certified"][0] > 0.75
    assert results["certified"][1] >= results["clean"][1] + 0.2, results


def test_rate_encoded_training_uses_fresh_noise_and_learns(quickstart):
    xtr, ytr, xte, yte = load_digits_split()
    torch.manual_seed(0)
    bnet = snncertify.certify(quickstart.build_net(), 8, encoding="rate")
    train_clean(bnet, xtr, ytr, epochs=3, progress=False)
    assert evaluate_accuracy(bnet, xte, yte) > 0.7


def test_quickstart_main_job_runs_and_writes_its_outputs(tmp_path, quickstart):
    rows = quickstart.main(["--out", str(tmp_path), "--epochs", "2", "--eps", "0", "0.02",
                            "--square-queries", "20"])
    assert {p.name for p in tmp_path.iterdir()} == {"quickstart.csv", "quickstart.md",
                                                    "quickstart.png"}
    assert_percent_table((tmp_path / "quickstart.md").read_text(), skip=("model", "eps"))
    by = {(r["model"], r["eps"], r["column"]): r["accuracy_pct"] for r in rows}
    for model in ("clean", "certified"):
        for eps in (0.0, 0.02):
            cert = max(v for (m, e, c), v in by.items() if m == model and e == eps
                       and c.startswith("certified"))
            assert cert <= by[(model, eps, "robust")] <= by[(model, eps, "clean")]
            assert by[(model, eps, "robust")] + by[(model, eps, quickstart.TIES_COLUMN)] \
                <= by[(model, eps, "clean")] + 0.1  # ties only are breaks: within one decimal
    assert quickstart.QUICK_SUITE in (tmp_path / "quickstart.md").read_text()
