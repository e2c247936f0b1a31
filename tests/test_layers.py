"""The package's import graph: dependencies point down the layers, no cycles, no hidden in-function imports.

Layers (DESIGN.md): ground floor (errors, limits, paths, files, ...) < video, annotation readers and the
synthetic world < models < tasks and training < index, evaluation and the dataset registry < the batch
backends (local, ray) < the apps (demo, the synthetic benchmark script) < the CLI and the package root. A module may
import its own layer or lower.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "videococa"

LAYERS = [
    ("ground", ["errors", "deprecation", "limits", "paths", "files", "interrupt", "cache", "version", "text",
                "formats", "lazy"]),
    ("media", ["video", "data.readers", "synthetic.world", "synthetic.benchmark"]),
    ("models", ["models"]),
    ("tasks", ["tasks", "train"]),
    ("services", ["index", "eval", "data.registry", "data"]),
    ("backends", ["backends"]),
    ("apps", ["demo", "synthetic.evaluate", "testing"]),
    ("serve", ["serve"]),
    ("cli", ["cli", "__main__", ""]),
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def layer(module: str) -> int:
    """Index of the most specific layer entry that is `module` or a package above it."""
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or (p and module.startswith(p + ".")) or (p == "" and module == ""):
                if len(p) > best:
                    best, rank = len(p), i
    assert rank is not None, f"module {module!r} has no layer: add it to LAYERS"
    return rank


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """videococa modules an import statement in `module` names (a `from pkg import sub` counts as `pkg.sub`)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [n[len("videococa."):] if n.startswith("videococa.") else "" for n in names
                if n == "videococa" or n.startswith("videococa.")]
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".") if module else []
    if node.level:
        up = node.level - (1 if is_pkg else 0)
        base = base[: len(base) - up] if up else base
        if not is_pkg and node.level == 1:
            base = module.split(".")[:-1]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    elif node.module and (node.module == "videococa" or node.module.startswith("videococa.")):
        target = node.module[len("videococa."):] if node.module != "videococa" else ""
    else:
        return []
    out = []
    for a in node.names:
        sub = f"{target}.{a.name}" if target else a.name
        out.append(sub if sub in MODULES else target)
    return out


def imports(module: str) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, the source line) for each videococa import in `module`."""
    path = MODULES[module]
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    found = []

    def visit(node, in_func: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, child):
                    found.append((target, child.lineno, in_func, lines[child.lineno - 1]))
            visit(child, inner)

    visit(tree, False)
    return found


def test_every_import_points_down_the_layers():
    upward = []
    for module in sorted(MODULES):
        for target, line, _, src in imports(module):
            if target != module and layer(target) > layer(module):
                upward.append(f"{module} (layer {LAYERS[layer(module)][0]}) imports {target} "
                              f"(layer {LAYERS[layer(target)][0]}) at line {line}: {src.strip()}")
    assert not upward, "\n".join(upward)


def test_no_import_cycles_between_modules():
    graph = {m: {t for t, _, in_func, _ in imports(m) if not in_func and t != m and t in MODULES} for m in MODULES}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def strong(v):  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package and the modules it re-exports import each other by design; a real cycle has two
            # modules that are not each other's package
            real = [m for m in comp if not any(o != m and o.startswith(m + ".") for o in comp) or m == ""]
            if len(comp) > 1 and len(real) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, cycles


def test_imports_inside_functions_say_why():
    unexplained = [f"{m}:{line}: {src.strip()}" for m in sorted(MODULES) for _, line, in_func, src in imports(m)
                   if in_func and "#" not in src]
    assert not unexplained, ("an import of our own inside a function hides the dependency direction; move it to "
                             "the top or say why in a comment on its line:\n" + "\n".join(unexplained))


def test_every_module_imports_in_a_fresh_interpreter():
    """Importing any module loads the package root first, so one fresh interpreter per module would test
    the same thing many times; one interpreter importing every module catches a module that fails to import."""
    names = [f"videococa.{m}" if m else "videococa" for m in sorted(MODULES) if m != "__main__"]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_a_page():
    """Every function (methods and nested functions too), from its def line to its last line, fits in 60 lines, so
    a reader can hold it in their head. A long declarative table (argparse groups) is split into groups too."""
    long = []
    for module, path in sorted(MODULES.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines; split them into named steps:\n" + "\n".join(long)
