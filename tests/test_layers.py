"""The package's layer contract, read from the source: imports point down the pipeline, at module top.

Layers, bottom to top (docs/architecture.md): a module may import from its own layer or below.
Imports under ``if TYPE_CHECKING:`` (type hints only) load nothing and are not counted.
An import inside a function is allowed only where a comment on its line or the line above says why
(``optional dependency``, or ``lazy``), e.g. pyscf, which ``pip install bnnmd[label]`` adds.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "bnnmd"

#: bottom to top; a name not listed belongs to the layer of its longest listed prefix
LAYERS = [
    ("bnnmd", "bnnmd._errors", "bnnmd._files", "bnnmd._checks", "bnnmd._yaml", "bnnmd._extension", "bnnmd._core",
     "bnnmd.units", "bnnmd.lammps_plugin"),
    ("bnnmd.data",),
    ("bnnmd.nn", "bnnmd.bayes"),
    ("bnnmd.posterior",),
    ("bnnmd.train",),
    ("bnnmd.uq",),
    ("bnnmd.deploy",),
    ("bnnmd.calculator",),
    ("bnnmd.label",),
    ("bnnmd.analysis",),
    ("bnnmd.learn",),
    ("bnnmd.cli",),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER:
            return LAYER[".".join(parts[:n])]
    raise KeyError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def bnnmd_targets(module: str, node) -> list:
    """The bnnmd modules an import statement loads (``from bnnmd.x import y``: ``bnnmd.x.y`` when that
    is a module, else ``bnnmd.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "bnnmd"]
    target = node.module or ""
    if target.split(".")[0] != "bnnmd":
        return []
    out = []
    for a in node.names:
        sub = f"{target}.{a.name}"
        out.append(sub if sub in MODULES or sub == "bnnmd._core" else target)
    return sorted(set(out))


def _scan():
    modules, top, inner = {}, {}, []
    for path in sorted(PACKAGE.rglob("*.py")):
        modules[module_name(path)] = path
    for name, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        in_function, typing_only = set(), set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
            if isinstance(fn, ast.If) and ast.unparse(fn.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                typing_only |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        top[name] = []
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in typing_only:
                continue  # imports for type hints only (``if TYPE_CHECKING:``) load nothing at run time
            if id(node) in in_function:
                said = " ".join(lines[max(0, node.lineno - 2):node.lineno]).lower()
                if "optional dependency" not in said and "lazy" not in said:
                    inner.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
            else:
                top[name].append((node.lineno, node))
    return modules, top, inner


MODULES, TOP, INNER = _scan()


def test_no_import_inside_a_function_without_a_reason():
    assert not INNER, ("imports inside functions (move them to the module top, or say on the line above why "
                       "they must be lazy: '# optional dependency: ...'):\n" + "\n".join(INNER))


def test_imports_point_down_the_layers():
    up = []
    for name, imports in TOP.items():
        for lineno, node in imports:
            for target in bnnmd_targets(name, node):
                if layer_of(target) > layer_of(name):
                    up.append(f"{MODULES[name].relative_to(PACKAGE.parent)}:{lineno}: {name} (layer "
                              f"{layer_of(name)}) imports {target} (layer {layer_of(target)})")
    assert not up, "imports that point up the pipeline:\n" + "\n".join(up)


def test_no_import_cycle():
    graph = {name: sorted({t for _, node in imports for t in bnnmd_targets(name, node) if t in MODULES})
             for name, imports in TOP.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, []):
            if nxt == node:
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_absolute_imports_and_every_module_in_a_layer():
    relative = [f"{MODULES[n].relative_to(PACKAGE.parent)}:{ln}" for n, imports in TOP.items()
                for ln, node in imports if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative, "relative imports (write bnnmd.x.y): " + ", ".join(relative)
    for name in MODULES:
        layer_of(name)  # KeyError naming the module when the table misses it
    assert layer_of("bnnmd.posterior._samples") < layer_of("bnnmd.train._methods") < layer_of("bnnmd.uq._evaluate")
