"""``python -m zoo``: list, show, fetch, re-measure and add zoo entries.

    python -m zoo list [--dataset mnist] [--defense ibp]
    python -m zoo card mnist-fc-ibp
    python -m zoo download mnist-fc-ibp
    python -m zoo eval mnist-fc-ibp --data-root ../shared/data    # re-measure one card
    python -m zoo reproduce --data-root ../shared/data             # re-measure every card
    python -m zoo table --dataset mnist                            # headline numbers (Markdown)
    python -m zoo add RUN_FOLDER [--data-root DATA]                 # maintainers: measure + add
    python -m zoo refresh-bounds [--names ...] [--data-root DATA]   # maintainers: after a bound change
    python -m zoo remeasure [--names ...] [--data-root DATA]        # maintainers: after a protocol change

``eval`` and ``reproduce`` print every number that differs from the card and
exit with status 1 if any does.
"""

from __future__ import annotations

import argparse
import json
import sys

from snncertify.report import fmt_percent, percent, to_markdown

from . import registry
from .measure import add_run, differences, headline, measure, refresh_bounds, remeasure


def _measure_entry(name: str, data_root: str | None, device: str, n: int | None) -> list[str]:
    c = registry.card(name)
    m = measure(registry.load_bounded(name), c["dataset"], data_root, c["protocol"], device, n)
    rows = [{"eps": r["eps"], "column": r["column"], "accuracy %": percent(r["accuracy"]),
             "n": r["n"]} for r in m["results"]]
    print(f"{name}: clean accuracy {fmt_percent(m['clean_accuracy'])} of {m['n_test']} test images")
    print(to_markdown(rows))
    diff = differences(c, m)
    print(f"{name}: " + ("every number equals the card" if not diff
                         else "DIFFERS from the card:\n  " + "\n  ".join(diff)))
    return diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="entry names with headline numbers")
    ls.add_argument("--dataset")
    ls.add_argument("--defense")
    sub.add_parser("card", help="print a card (JSON)").add_argument("name")
    sub.add_parser("download", help="fetch an entry's weights; print the path").add_argument("name")
    for cmd, text in (("eval", "re-measure one entry with its card's protocol"),
                      ("reproduce", "re-measure every entry (or --names)")):
        e = sub.add_parser(cmd, help=text)
        if cmd == "eval":
            e.add_argument("name")
        else:
            e.add_argument("--names", nargs="+", help="default: every entry")
            e.add_argument("--dataset", help="only this data set's entries")
        e.add_argument("--data-root", help="data folder (not needed for digits)")
        e.add_argument("--device", default="cpu")
        e.add_argument("--n", type=int, help="override the card's subset size (quick check)")
    t = sub.add_parser("table", help="headline numbers of the cards as a Markdown table")
    t.add_argument("--dataset")
    a = sub.add_parser("add", help="maintainers: measure a training run and add it")
    a.add_argument("runs", nargs="+", help="run folders (model.pt + config.json)")
    a.add_argument("--data-root")
    a.add_argument("--notes", default="")
    r = sub.add_parser("refresh-bounds",
                       help="maintainers: re-measure the bound columns after a bound change")
    r.add_argument("--names", nargs="+", help="default: every entry")
    r.add_argument("--data-root")
    r.add_argument("--device", default="cpu")
    rm = sub.add_parser("remeasure", help="maintainers: re-measure cards with today's protocol")
    rm.add_argument("--names", nargs="+", help="default: every entry")
    rm.add_argument("--dataset", help="only this data set's entries")
    rm.add_argument("--data-root")
    rm.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    if args.cmd == "list":
        for name in registry.list_entries(args.dataset, args.defense):
            h = headline(registry.card(name))
            ver = f"{h['verified %']} % ({h['verified by']})" if h["verified by"] else "-"
            print(f"{name:28} clean {h['clean %']:5.1f} %  eps {h['eps']:g}: worst-case attack "
                  f"{h['worst-case attack %']:5.1f} %, verified {ver}  (n={h['n']})")
    elif args.cmd == "card":
        print(json.dumps(registry.card(args.name), indent=1))
    elif args.cmd == "download":
        print(registry.download(args.name))
    elif args.cmd == "eval":
        return int(bool(_measure_entry(args.name, args.data_root, args.device, args.n)))
    elif args.cmd == "reproduce":
        names = args.names or registry.list_entries(args.dataset)
        failed = [n for n in names if _measure_entry(n, args.data_root, args.device, args.n)]
        print(f"reproduce: {len(names) - len(failed)} of {len(names)} cards reproduced exactly"
              + (f"; differ: {', '.join(failed)}" if failed else ""))
        return int(bool(failed))
    elif args.cmd == "table":
        rows = [{k: (f"{v:g}" if k == "eps" else f"{v:.1f}" if isinstance(v, float) else v)
                 for k, v in headline(registry.card(n)).items()}
                for n in registry.list_entries(args.dataset)]
        print(to_markdown(rows))
    elif args.cmd == "refresh-bounds":
        for name in args.names or registry.list_entries():
            changed = refresh_bounds(name, args.data_root, args.device)
            print(f"{name}: " + ("bound columns unchanged" if not changed
                                 else "updated:\n  " + "\n  ".join(changed)))
    elif args.cmd == "remeasure":
        for name in args.names or registry.list_entries(args.dataset):
            c = remeasure(name, args.data_root, args.device)
            print(f"{name}: re-measured in {c['protocol']['measure_seconds']:.0f} s: {headline(c)}")
    elif args.cmd == "add":
        for run in args.runs:
            c = add_run(run, args.data_root, notes=args.notes)
            print(f"added {c['name']}: {headline(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
