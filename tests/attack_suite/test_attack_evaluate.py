"""evaluate(): rows, per-sample worst case, writers, plot, masking checks."""

from __future__ import annotations

import warnings

import pytest
import torch

import attacks
from attacks import AttackableSNN, MaskingWarning
from attacks import checks as ck

EPS = [0.0, 0.05, 0.1, 0.3]


@pytest.fixture(scope="module")
def direct_results(direct_model):
    x, y = direct_model.x[:96], direct_model.y[:96]
    atks = [attacks.FGSM(), attacks.PGD(steps=20), attacks.PGD(steps=20, grad="rate"),
            attacks.APGD("ce", steps=20), attacks.APGD("dlr", steps=20),
            attacks.Square(n_queries=200)]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = attacks.evaluate(direct_model.bnet, (x, y), eps=EPS, attacks=atks,
                               batch_size=48, progress=False, expect_broken_at=0.3,
                               keep_adversarial=True)
    return res, rec, x, y


def test_worst_case_is_at_most_every_attack_and_stays_in_the_ball(direct_results):
    res, _, x, y = direct_results
    labels = ["FGSM", "PGD-20", "PGD-20 [rate]", "APGD-CE-20", "APGD-DLR-20", "Square-200"]
    assert {r["attack"] for r in res} == {"clean", "robust", *labels}
    assert len(res) == len(EPS) * (len(labels) + 2)
    for e in EPS:
        m = res.masks[e]
        assert len(m["robust"]) == len(y)
        for lab in labels:
            assert not bool((m["robust"] & ~m[lab]).any())  # worst case <= each attack
            assert not bool((m[lab] & ~m["clean"]).any())
            assert res.accuracy(e, "robust") <= res.accuracy(e, lab)
            adv = res.adversarial[e][lab]
            assert (adv - x).abs().max() <= e + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        # the worst case is exactly the AND of the columns
        assert torch.equal(m["robust"], attacks.worst_case([m["clean"], *(m[k] for k in labels)]))
    assert res.accuracy(0.0, "robust") == res.accuracy(0.0, "clean") > 0.85
    # worst case is strictly better than the best single attack somewhere
    assert any(res.accuracy(e, "robust") < min(res.accuracy(e, k) for k in labels) for e in EPS)


def test_clean_model_broken_and_no_masking_flags(direct_results):
    res, rec, _, _ = direct_results
    assert res.accuracy(0.3, "robust") <= 0.02
    robust = [res.accuracy(e, "robust") for e in EPS]
    assert robust == sorted(robust, reverse=True)
    assert res.warnings == []
    assert not [w for w in rec if issubclass(w.category, attacks.SanityWarning)]


def test_csv_markdown_and_plot_writers_round_trip(direct_results, tmp_path):
    res = direct_results[0]
    res.to_csv(tmp_path / "r.csv")
    back = attacks.read_csv(tmp_path / "r.csv")
    assert [(r["eps"], r["attack"], r["accuracy"]) for r in back] == \
        [(r["eps"], r["attack"], r["accuracy"]) for r in res]
    md = res.to_markdown(tmp_path / "r.md")
    lines = md.strip().splitlines()
    assert lines[0].startswith("| eps | clean | FGSM") and "robust" in lines[0]
    assert len(lines) == 2 + len(EPS)
    assert (tmp_path / "r.md").read_text() == md
    res.plot(tmp_path / "r.png", title="digits")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_masked_evaluation_is_flagged(rate_model):
    """Zero encoder gradient: gradient attacks stall, Square does not -> warnings."""
    x, y = rate_model.x[:64], rate_model.y[:64]
    clf = AttackableSNN(rate_model.bnet, encoder_grad="exact", warn_zero_grad=False)
    with pytest.warns(MaskingWarning) as rec:
        res = attacks.evaluate(clf, (x, y), eps=[0.1, 0.2],
                               attacks=[attacks.PGD(steps=10, random_start=False),
                                        attacks.Square(n_queries=300)], progress=False)
    msgs = " ".join(str(w.message) for w in rec)
    assert "gradient-free Square-300" in msgs
    assert "exactly zero" in msgs
    assert res.accuracy(0.2, "PGD-10") == res.accuracy(0.2, "clean")


def test_row_checks_on_synthetic_rows():
    def row(e, name, kind, acc, grad=True, transfer=False):
        return dict(eps=e, attack=name, kind=kind, accuracy=acc, gradient_based=grad,
                    transfer=transfer)

    good = [row(0.1, "PGD", "attack", 0.5), row(0.1, "Square", "attack", 0.55, grad=False),
            row(0.1, "robust", "robust", 0.45, grad=False),
            row(0.2, "PGD", "attack", 0.2), row(0.2, "Square", "attack", 0.3, grad=False),
            row(0.2, "robust", "robust", 0.2, grad=False)]
    assert ck.run_checks(good, max_class_share=0.11) == []
    bad = [row(0.1, "PGD", "attack", 0.5), row(0.1, "Square", "attack", 0.2, grad=False),
           row(0.1, "T", "attack", 0.1, grad=False, transfer=True),
           row(0.1, "robust", "robust", 0.1, grad=False),
           row(0.2, "robust", "robust", 0.3, grad=False),
           row(0.6, "robust", "robust", 0.3, grad=False)]
    found = [m for _, m in ck.run_checks(bad, max_class_share=0.11, expect_broken_at=0.5)]
    assert any("INCREASES" in m for m in found)
    assert any("gradient-free Square" in m for m in found)
    assert any("transfer attack T" in m for m in found)
    assert any("largest class share" in m for m in found)
    assert any("clean-trained" in m for m in found)
    assert ck.flags_masking(found, 0.1) and not ck.flags_masking(found, 0.2)
    assert not ck.flags_masking([m for _, m in ck.run_checks(good, max_class_share=0.11)], 0.1)


def test_batches_and_dataloader_agree(direct_model):
    x, y = direct_model.x[:40], direct_model.y[:40]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    kw = dict(eps=[0.1], attacks=["fgsm", attacks.PGD(steps=5)], progress=False)
    a = attacks.evaluate(direct_model.bnet, (x, y), batch_size=16, **kw)  # same batches
    b = attacks.evaluate(direct_model.bnet, loader, **kw)
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]
    for k, m in a.masks[0.1].items():
        assert torch.equal(m, b.masks[0.1][k]), k
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.evaluate(direct_model.bnet, (x * 2, y), **kw)


def test_report_tables_are_in_percent(direct_model):
    from tables import assert_percent_table

    res = attacks.evaluate(direct_model.bnet, (direct_model.x[:24], direct_model.y[:24]),
                           eps=[0.02, 0.05], attacks=["fgsm"], bounds=["ibp"], progress=False)
    assert all(0 <= r["accuracy"] <= 1 for r in res)  # the API: fractions
    assert_percent_table(res.to_markdown(), skip=("eps",))


def test_rows_count_tie_only_breaks_and_strict_flips(direct_model):
    from attacks.classifier import margin

    x, y = direct_model.x[:48], direct_model.y[:48]
    res = attacks.evaluate(direct_model.bnet, (x, y), eps=[0.1], progress=False,
                           attacks=["fgsm", attacks.PGD(steps=10)], keep_adversarial=True,
                           run_sanity_checks=False)
    clean = res.masks[0.1]["clean"]
    flips_any = torch.zeros_like(clean)
    total_ties = 0
    for r in res:
        if r["kind"] != "attack":
            assert ("ties" in r) == (r["kind"] == "robust")
            continue
        m = margin(direct_model.bnet(res.adversarial[0.1][r["attack"]]), y)  # plain forward
        assert r["flips"] == int((clean & (m < 0)).sum())
        assert r["ties"] == int((clean & (m == 0)).sum())
        assert r["ties"] + r["flips"] == int(clean.sum()) - r["correct"]
        flips_any |= clean & (m < 0)
        total_ties += r["ties"]
    robust = next(r for r in res if r["kind"] == "robust")
    assert robust["flips"] == int(flips_any.sum())
    assert robust["ties"] + robust["flips"] == int(clean.sum()) - robust["correct"]
    assert total_ties > 0  # spike counts tie: the split is not vacuous here


@pytest.mark.parametrize("gap,flagged", [(0.10, True), (0.09, False)])
def test_a_search_far_below_every_gradient_attack_is_flagged(gap, flagged):
    def row(name, acc, grad=True, search=False):
        return {"eps": 0.1, "attack": name, "kind": "attack", "accuracy": acc,
                "gradient_based": grad, "search": search, "transfer": False}

    rows = [row("PGD", 0.50), row("APGD-CE", 0.45),
            row("SpikeSearch", 0.45 - gap, search=True)]  # uses a relaxed net's gradients
    found = ck.check_square_vs_gradient(rows)
    assert bool(found) == flagged
    if flagged:
        assert "GRADIENT MASKING at eps=0.1: gradient-free SpikeSearch" in found[0]


def test_certified_column_names_round_trip():
    assert attacks.certified_method(attacks.certified_column("alpha-crown")) == "alpha-crown"
    with pytest.raises(ValueError, match="not a certified column"):
        attacks.certified_method("robust")
