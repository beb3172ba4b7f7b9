"""examples/compare_defenses.py on a tiny subset: table shape, files, the consistency check."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from tables import assert_percent_table

import attacks
import zoo
from snncertify.report import percent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def compare():
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module("compare_defenses")
    finally:
        sys.path.remove(str(EXAMPLES))


ARGS = ["--n", "30", "--eps", "0.02", "0.1", "--attacks", "fgsm", "pgd",
        "square(n_queries=30)", "--methods", "ibp", "crown-ibp", "--quiet"]


def test_compare_writes_table_and_plots(compare, tmp_path, capsys):
    rows = compare.main([*ARGS, "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} == {
        "compare_defenses.csv", "compare_defenses.md", "accuracy_vs_eps.png",
        "certified_vs_empirical.png"}
    for png in ("accuracy_vs_eps.png", "certified_vs_empirical.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    defenses = {zoo.card(n)["defense"] for n in zoo.list(dataset="digits")}
    columns = ["clean", "FGSM", "PGD-40", "Square-30", "worst-case attack", "verified (IBP)",
               "verified (crown-ibp)", "verified (best linear)", compare.TIES_COLUMN]
    assert {r["defense"] for r in rows} == defenses
    assert len(rows) == len(defenses) * 2 * len(columns)
    for d in defenses:
        for e in (0.02, 0.1):
            cell = {r["column"]: r["accuracy_pct"] for r in rows if r["defense"] == d and r["eps"] == e}
            assert sorted(cell) == sorted(columns)
            assert cell["verified (best linear)"] <= cell["worst-case attack"] <= cell["clean"]
            assert cell[compare.TIES_COLUMN] <= cell["clean"] - cell["worst-case attack"] + 0.2
            assert all(r["n"] == 30 for r in rows)
    md = (tmp_path / "compare_defenses.md").read_text()
    assert "n = 30" in md or "of 30 test images" in md
    assert md.count("\n| ") == len(defenses) * 2 + 1  # header + one line per defense and eps
    assert_percent_table(md, skip=("defense", "eps", "n"))
    out = capsys.readouterr().out
    assert "worst-case attack" in out and "checked: verified <= worst-case attack" in out


def test_planted_violation_is_an_error(compare, tmp_path, monkeypatch):
    real = compare.evaluate_entry

    def planted(name, x, y, args):
        rows, found = real(name, x, y, args)
        for r in rows:
            if r["attack"] == "certified (ibp)":
                r["correct"], r["accuracy"] = len(y), 1.0  # verified > worst case: impossible
        return rows, found

    monkeypatch.setattr(compare, "evaluate_entry", planted)
    with pytest.raises(attacks.ConsistencyError, match="certified \\(ibp\\)"):
        compare.main([*ARGS, "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()  # nothing written for an inconsistent table


def test_consistency_check_flags_a_worst_case_above_any_column():
    rows = [{"eps": 0.1, "attack": "clean", "kind": "clean", "correct": 9},
            {"eps": 0.1, "attack": "PGD", "kind": "attack", "correct": 6},
            {"eps": 0.1, "attack": "Square", "kind": "attack", "correct": 7},
            {"eps": 0.1, "attack": "robust", "kind": "robust", "correct": 5},
            {"eps": 0.1, "attack": "certified (ibp)", "kind": "certified", "correct": 4}]
    assert attacks.check_consistency(rows) == []
    rows[1]["correct"] = 4
    assert attacks.check_consistency(rows) == ["eps=0.1: worst case 5 > PGD 4"]
    rows[1]["correct"], rows[3]["correct"] = 6, 10
    assert attacks.check_consistency(rows) == [
        "eps=0.1: worst case 10 > clean 9", "eps=0.1: worst case 10 > PGD 6",
        "eps=0.1: worst case 10 > Square 7"]


def test_from_cards_tabulates_the_cards_own_numbers(compare, tmp_path):
    rows = compare.main(["--from-cards", "--eps", "0.05", "--quiet", "--out", str(tmp_path)])
    assert (tmp_path / "certified_vs_empirical.png").read_bytes()[:4] == b"\x89PNG"
    for name in zoo.list(dataset="digits"):
        card = zoo.card(name)
        have = {r["column"]: r for r in card["results"] if r["eps"] == 0.05}
        cell = {r["column"]: r["accuracy_pct"] for r in rows if r["model"] == name}
        assert cell["worst-case attack"] == percent(have["robust"]["accuracy"])
        assert cell["clean"] == percent(have["clean"]["accuracy"])
        linear = [v["accuracy"] for k, v in have.items() if k in ("certified (crown-ibp)",
                                                                   "certified (crown)")]
        assert cell["verified (best linear)"] == percent(max(linear))
        assert cell[compare.TIES_COLUMN] == percent(have["robust"]["ties"] / have["robust"]["n"])
        assert all(r["n"] == have["clean"]["n"] for r in rows if r["model"] == name)
    with pytest.raises(SystemExit, match="no rows at eps"):
        compare.main(["--from-cards", "--eps", "0.07", "--quiet", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="drop --n"):
        compare.main(["--from-cards", "--n", "30", "--quiet", "--out", str(tmp_path)])
