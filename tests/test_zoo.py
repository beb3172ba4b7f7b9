"""The model zoo: registry, cards, offline loading, hash-checked downloads (loopback HTTP)."""

from __future__ import annotations

import http.server
import json
import pickle
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch
from tables import PERCENT_CELL, assert_percent_table
from torch import nn

import zoo
from snncertify import BoundedSNN
from snncertify.training.datasets import make_loader
from snncertify.training.loop import evaluate
from zoo import hub, registry
from zoo.__main__ import main as zoo_cli
from zoo.measure import check_order, differences, entry_name, headline, measure

DIGITS = zoo.list(dataset="digits")


def test_zoo_names_follow_the_cards_and_filters_select():
    names = zoo.list()
    assert names == sorted(names) and len(names) >= 6
    for n in names:
        c = zoo.card(n)
        assert n == f"{c['arch']}{'-rate' if c['certify']['encoding'] == 'rate' else ''}-{c['defense']}"
        assert c["arch"].startswith(c["dataset"] + "-")
    assert {zoo.card(n)["defense"] for n in DIGITS} >= {
        "clean", "hire", "stable", "pgd-at", "ibp", "crown-ibp"}
    assert zoo.list(defense="ibp") and all(zoo.card(n)["defense"] == "ibp"
                                           for n in zoo.list(defense="ibp"))
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        zoo.list(dataset="imagenet")
    with pytest.raises(KeyError, match="did you mean digits-fc-ibp"):
        zoo.card("digits-fc-ibq")


def test_card_is_a_copy_and_complete():
    c = zoo.card(DIGITS[0])
    for key in registry.REQUIRED_KEYS:
        assert key in c
    assert set(c["certify"]) >= {"num_steps", "encoding", "readout", "seed"}
    assert 0 < c["clean_accuracy"] <= 1 and c["n_test"] > 0
    assert c["training"]["command"].startswith("python -m snncertify.train")
    c["clean_accuracy"] = -1
    assert zoo.card(DIGITS[0])["clean_accuracy"] != -1


@pytest.mark.parametrize("name", zoo.list())
def test_every_file_matches_its_sha256(name):
    w = zoo.card(name)["weights"]
    path = hub.PACKAGE_DIR / w["file"]  # a source checkout holds every entry's file
    assert path.is_file(), f"{path} missing from the checkout"
    assert hub.sha256(path) == w["sha256"] and path.stat().st_size == w["bytes"]
    assert w["url"].endswith("/" + w["file"])


@pytest.mark.parametrize("name", DIGITS)
def test_digits_entry_loads_offline_and_reproduces_clean_accuracy(name):
    c = zoo.card(name)
    net = zoo.load(name)
    assert type(net) is nn.Sequential and not net.training
    bnet = zoo.load_bounded(name)
    assert isinstance(bnet, BoundedSNN) and not bnet.training
    assert (bnet.num_steps, bnet.encoding.name) == (c["certify"]["num_steps"], c["certify"]["encoding"])
    acc = evaluate(bnet, make_loader("digits", None, False, 500, num_steps=bnet.num_steps))
    assert acc == c["clean_accuracy"]
    # the table's own invariants: certified <= worst case <= every attack, clean
    for e in {r["eps"] for r in c["results"]}:
        cells = {r["column"]: r["accuracy"] for r in c["results"] if r["eps"] == e}
        atk = [v for k, v in cells.items() if k not in ("clean", "robust")
               and not k.startswith("certified")]
        assert all(cells["robust"] <= a for a in atk) and cells["robust"] <= cells["clean"]
        assert all(v <= cells["robust"] for k, v in cells.items() if k.startswith("certified"))
    if c["defense"] in ("ibp", "crown-ibp"):  # a certified entry must prove something
        assert max(r["accuracy"] for r in c["results"]
                   if r["kind"] == "certified" and r["eps"] == 0.02) > 0.3


def test_unpretrained_load_differs_from_pretrained():
    a, b = zoo.load(DIGITS[0]), zoo.load(DIGITS[0], pretrained=False)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


CARD_SLACK = 2  # samples: another CPU's rounding may flip a spike (PGD's sign steps amplify it)


def _same_count(a: dict, b: dict) -> bool:
    """Two rows of a card agree: the same cell, its correct, tie and flip counts each within
    CARD_SLACK samples of the other's (tie counts only where the card has them: cards measured
    before them do not; an attack's wall seconds never)."""
    counts = ("correct", *(k for k in ("ties", "flips") if k in a))
    skip = {"accuracy", "seconds", "ties", "flips", *counts}
    if {k: v for k, v in a.items() if k not in skip} != {k: v for k, v in b.items() if k not in skip}:
        return False
    return all(abs(a[k] - b[k]) <= CARD_SLACK for k in counts)


def test_digits_card_columns_reproduce():
    """The card's gradient-attack and bound columns, re-measured with its protocol, agree
    within CARD_SLACK samples (bit for bit on the machine that wrote it; the full card,
    SpikeSearch and Square-5000 included: ``python -m zoo eval``)."""
    name = "digits-fc-ibp"
    c = zoo.card(name)
    quick = {**c["protocol"], "attacks": ["fgsm", "pgd", "apgd-ce", "apgd-dlr"],
             "methods": ["ibp", "crown-ibp"]}
    m = measure(zoo.load_bounded(name), "digits", None, quick, progress=False)
    assert abs(m["clean_accuracy"] - c["clean_accuracy"]) * c["n_test"] <= CARD_SLACK
    card_rows = {(r["eps"], r["column"]): r for r in c["results"]}
    compared = 0
    for r in m["results"]:
        if r["kind"] != "robust":
            assert _same_count(card_rows[(r["eps"], r["column"])], r), r
            compared += 1
    assert compared == len(c["protocol"]["eps"]) * 7


def test_refresh_bounds_rewrites_only_stale_bound_columns(tmp_path, monkeypatch):
    from zoo import measure as zoo_measure

    cards = tmp_path / "cards"
    shutil.copytree(registry.CARDS_DIR, cards)
    monkeypatch.setattr(registry, "CARDS_DIR", cards)
    monkeypatch.setattr(zoo_measure, "CARDS_DIR", cards)
    registry._cards.cache_clear()
    try:
        name = "digits-fc-ibp"
        path = cards / f"{name}.json"
        card = json.loads(path.read_text())
        row = next(r for r in card["results"] if r["column"] == "certified (crown-ibp)")
        true = row["accuracy"]
        row["accuracy"] = 0.0  # a stale bound column
        card["protocol"] |= {"eps": [row["eps"]], "methods": ["crown-ibp"]}  # quick: one column
        path.write_text(json.dumps(card))
        registry._cards.cache_clear()
        changed = zoo_measure.refresh_bounds(name, None, progress=False)
        assert len(changed) == 1
        head, _, new = changed[0].partition(" -> ")
        assert head == f"eps {row['eps']:g} certified (crown-ibp): 0.0 %"
        assert abs(float(new.removesuffix(" %")) - 100 * true) <= 100 * CARD_SLACK / row["n"] + 0.05
        fresh = json.loads(path.read_text())
        assert [r for r in fresh["results"] if r["kind"] != "certified"] == \
            [r for r in card["results"] if r["kind"] != "certified"]  # attacks untouched
        assert zoo_measure.refresh_bounds(name, None, progress=False) == []
        robust = next(r for r in fresh["results"]
                      if r["kind"] == "robust" and r["eps"] == row["eps"])
        robust["accuracy"] = 0.0  # verified above the worst case: refused, card untouched
        path.write_text(json.dumps(fresh))
        registry._cards.cache_clear()
        before = path.read_text()
        with pytest.raises(ValueError, match="exceeds the worst-case attack"):
            zoo_measure.refresh_bounds(name, None, progress=False)
        assert path.read_text() == before
    finally:
        registry._cards.cache_clear()


def test_remeasure_rewrites_the_measured_fields_and_keeps_the_rest(tmp_path, monkeypatch):
    from zoo import measure as zoo_measure

    cards = tmp_path / "cards"
    shutil.copytree(registry.CARDS_DIR, cards)
    monkeypatch.setattr(registry, "CARDS_DIR", cards)
    monkeypatch.setattr(zoo_measure, "CARDS_DIR", cards)
    quick = {"eps": [0.05], "attacks": ["fgsm", "spike-search(pgd_steps=5, restarts=1, iters=2)"],
             "methods": ["ibp"], "n": 40, "subset_seed": 0, "seed": 0, "batch_size": 40,
             "threads": 1}
    monkeypatch.setattr(zoo_measure, "default_protocol", lambda dataset, eps: dict(quick))
    registry._cards.cache_clear()
    try:
        name = "digits-fc-pgd-at"
        old = json.loads((cards / f"{name}.json").read_text())
        new = zoo_measure.remeasure(name, None, notes="re-measured", progress=False)
        assert json.loads((cards / f"{name}.json").read_text()) == new
        assert {k: new[k] for k in ("training", "weights", "certify", "neurons")} == \
            {k: old[k] for k in ("training", "weights", "certify", "neurons")}
        assert new["notes"] == "re-measured" and new["protocol"]["measure_seconds"] > 0
        assert new["protocol"]["attacks"] == quick["attacks"]
        columns = [r["column"] for r in new["results"]]
        assert columns == ["clean", "FGSM", "SpikeSearch-5+1x2", "robust", "certified (ibp)"]
        assert all(r["n"] == 40 and r["eps"] == 0.05 for r in new["results"])
        assert all("seconds" in r and "ties" in r for r in new["results"] if r["kind"] == "attack")
    finally:
        registry._cards.cache_clear()


def test_measured_rows_must_keep_their_order():
    rows = [{"eps": 0.1, "kind": "clean", "accuracy": 0.9},
            {"eps": 0.1, "kind": "attack", "accuracy": 0.5},
            {"eps": 0.1, "kind": "robust", "accuracy": 0.4},
            {"eps": 0.1, "kind": "certified", "accuracy": 0.3}]
    check_order("ok", rows)
    for i, bad in ((3, 0.45), (2, 0.55), (1, 0.95)):
        broken = [dict(r) for r in rows]
        broken[i]["accuracy"] = bad
        with pytest.raises(AssertionError, match="fails"):
            check_order("bad", broken)


def test_cli_eval_reports_differences(capsys):
    """``eval --n 20`` measures a different subset: the CLI names what differs, exit 1."""
    assert zoo_cli(["eval", "digits-fc-clean", "--n", "20"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS from the card" in out and "(n=360), measured" in out


def test_differences_reports_a_changed_number():
    c = zoo.card("digits-fc-ibp")
    m = {"clean_accuracy": c["clean_accuracy"], "results": [dict(r) for r in c["results"]]}
    assert differences(c, m) == []
    m["results"][-1]["accuracy"] += 0.01
    assert len(differences(c, m)) == 1


def test_cli_list_card_and_table_print_percent_figures(capsys):
    assert zoo_cli(["list", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in DIGITS)
    assert zoo_cli(["card", DIGITS[0]]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == DIGITS[0]
    assert zoo_cli(["list", "--dataset", "digits"]) == 0
    for line in capsys.readouterr().out.splitlines():  # every figure: percent, one decimal
        assert re.findall(r"(\d+(?:\.\d+)?) %", line) and \
            all(PERCENT_CELL.match(v) for v in re.findall(r"(\d+(?:\.\d+)?) %", line)), line
    assert zoo_cli(["table", "--dataset", "digits"]) == 0
    table = capsys.readouterr().out
    assert "worst-case attack %" in table
    assert_percent_table(table, skip=("name", "defense", "encoding", "eps", "n_test", "verified by", "n",
                                         "flag"))
    h = headline(zoo.card("digits-fc-ibp"))
    assert h["verified %"] is not None and h["verified %"] <= h["worst-case attack %"]


def test_entry_name_is_built_from_the_config():
    cfg = {"dataset": "mnist", "arch": "mnist-fc", "certify": {"encoding": "rate"},
           "defense": "certified", "defense_params": {"method": "ibp"}}
    assert entry_name(cfg) == "mnist-fc-rate-ibp"
    cfg = {"dataset": "mnist", "arch": "tutorial-fc", "certify": {"encoding": "direct"},
           "defense": "hire", "defense_params": {}}
    assert entry_name(cfg) == "mnist-tutorial-fc-hire"


# ---- downloads over loopback HTTP -------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate = False

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802
        if not self.truncate:
            return super().do_GET()
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])  # then the connection closes
        self.close_connection = True


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback HTTP server over ``tmp_path/srv``; the cache in ``tmp_path/cache``; the
    packaged folder emptied so that every entry must be fetched."""
    srv = tmp_path / "srv"
    srv.mkdir()

    class Handler(_Handler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(srv), **k)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(hub.URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "PACKAGE_DIR", tmp_path / "empty")
    yield srv, tmp_path / "cache", Handler
    httpd.shutdown()
    httpd.server_close()


def _publish(srv: Path, name: str) -> dict:
    w = zoo.card(name)["weights"]
    shutil.copy(Path(__file__).resolve().parents[1] / "zoo" / "checkpoints" / w["file"], srv)
    return w


def test_download_from_loopback_then_cache(server):
    srv, cache, _ = server
    name = "digits-fc-hire"
    w = _publish(srv, name)
    path = zoo.download(name, progress=False)
    assert path == cache / w["file"] and hub.sha256(path) == w["sha256"]
    assert sorted(p.name for p in cache.iterdir()) == [w["file"]]  # no .partial left
    (srv / w["file"]).unlink()  # now only the cache has it
    net = zoo.load(name)
    ref = torch.load(path, weights_only=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in ref.items())


def test_wrong_hash_raises_and_leaves_no_file(server):
    srv, cache, _ = server
    w = dict(_publish(srv, "digits-fc-clean"), sha256="0" * 64)
    with pytest.raises(hub.ZooDownloadError, match="invalid hash"):
        hub.weights_path(w, progress=False)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_interrupted_transfer_leaves_no_file(server):
    srv, cache, handler = server
    w = _publish(srv, "digits-fc-clean")
    handler.truncate = True
    with pytest.raises(hub.ZooDownloadError):
        hub.weights_path(w, progress=False)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_missing_file_on_server_is_a_clear_error(server):
    with pytest.raises(hub.ZooDownloadError, match="could not download digits-fc-clean.pt"):
        zoo.download("digits-fc-clean", progress=False)


def test_corrupt_cache_is_replaced(server):
    srv, cache, _ = server
    w = _publish(srv, "digits-fc-clean")
    cache.mkdir()
    (cache / w["file"]).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="deleting and fetching it again"):
        path = hub.weights_path(w, progress=False)
    assert hub.sha256(path) == w["sha256"]


def test_modified_packaged_file_is_an_error(tmp_path, monkeypatch):
    w = zoo.card("digits-fc-clean")["weights"]
    monkeypatch.setattr(hub, "PACKAGE_DIR", tmp_path)
    (tmp_path / w["file"]).write_bytes(b"tampered")
    with pytest.raises(hub.ZooDownloadError, match="was modified"):
        zoo.load("digits-fc-clean")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_loading_never_unpickles_code(tmp_path, monkeypatch):
    """A file with the card's hash but a code-running pickle is refused (weights_only)."""
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil(), protocol=2))
    c = zoo.card("digits-fc-clean")
    c["weights"] = {**c["weights"], "file": "evil.pt", "sha256": hub.sha256(evil)}
    monkeypatch.setattr(hub, "PACKAGE_DIR", tmp_path)
    monkeypatch.setattr(registry, "_entry", lambda name: c)
    with pytest.raises(pickle.UnpicklingError):
        zoo.load("digits-fc-clean")


def _strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from _strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x)


def test_no_card_holds_a_machine_path():
    """Every card's commands reproduce elsewhere: relative paths and placeholders only."""
    import re

    absolute = re.compile(r"(^|[\s='\"])(/|~/|[A-Za-z]:\\)\S")
    for name in zoo.list_entries():
        for s in _strings(zoo.card(name)):
            assert not absolute.search(s), (name, s)
    from zoo.measure import portable_command

    cmd = "python -m snncertify.train --data-root /srv/data --out /home/me/runs/x --epochs 2"
    assert portable_command(cmd, "x") == \
        "python -m snncertify.train --data-root DATA --out runs/x --epochs 2"
    with pytest.raises(ValueError, match="machine path '--init=/tmp/w.pt'"):
        portable_command("python -m snncertify.train --init=/tmp/w.pt", "x")
