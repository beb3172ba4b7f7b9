"""The layers in order: imports run one way, without circles, and no code outside
the encodings package switches on an encoding's name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("snncertify", "attacks", "zoo")
#: layer of a module (by dotted-name prefix, longest first): a layer imports only lower ones
LAYERS = (("snncertify.training", 2), ("snncertify.train", 2), ("zoo", 3), ("attacks", 1),
          ("snncertify", 0))


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def layer(name: str) -> int:
    return next(rank for prefix, rank in LAYERS if name == prefix or name.startswith(prefix + "."))


def imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports, at the top or inside functions (a lazy import
    still ties two modules together)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    mods = modules()
    return {m for m in found if m in mods and m != name}


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for name, path in modules().items():
        for dep in imports(name, path):
            if layer(dep) > layer(name) and not name.startswith(dep + "."):
                wrong.append(f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})")
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_circle():
    mods = modules()
    graph = {n: imports(n, p) for n, p in mods.items()}
    graph = {n: {d for d in deps if not n.startswith(d + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]) if d in stack else d)
            elif d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "\n".join(cycles)


SWITCH = re.compile(r"""encoding(\.name)?['"\]]*\s*(==|!=|\bin\s*\()""")


def test_no_code_outside_the_encodings_switches_on_an_encoding_name():
    hits = []
    for name, path in modules().items():
        if name.startswith("snncertify.encoding"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if SWITCH.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)
