"""The package's folders are its layers: a module imports only its own layer and the layers below
it, the modules import each other in no circle, and imports of the package's own modules sit at
the top of the file (only heavy optional third-party libraries load lazily). Read from the source,
so a new import that breaks the architecture fails here, wherever it is."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "softprompt"

#: lowest first; a module may import its own layer and any layer before it
LAYERS = [
    ("foundation", {"errors", "storage", "hf_compat"}),
    ("config", {"config"}),
    ("adapters", {"adapters"}),
    ("modeling", {"modeling"}),
    ("metrics", {"metrics"}),
    ("tasks", {"tasks"}),
    ("objectives", {"objectives"}),
    ("experiment", {"experiment"}),
    ("runs", {"runs"}),
    ("rewards", {"rewards"}),
    ("training", {"training"}),
    ("commands", {"commands"}),
    ("package", {"__init__", "api", "__main__", "_moved"}),
]
RANK = {top: i for i, (_, tops) in enumerate(LAYERS) for top in tops}


def module_name(path: Path) -> str:
    parts = ["softprompt", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    parts = module.split(".")
    return RANK["__init__" if len(parts) == 1 else parts[1]]


def imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported module of the package, at the top of the file?, line) for every import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "softprompt":
                target = node.module
            else:
                continue
            for alias in node.names:  # `from package import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in MODULES else target, id(node) in top, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in top, node.lineno) for a in node.names if a.name.split(".")[0] == "softprompt"]
    return [(t, at_top, line) for t, at_top, line in out if t in MODULES and t != module]


def test_every_module_belongs_to_a_layer():
    assert len(MODULES) > 60
    unplaced = [m for m in MODULES if m != "softprompt" and m.split(".")[1] not in RANK]
    assert not unplaced, f"modules in no layer (add their folder to LAYERS): {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0]}) at line {line}"
              for m in MODULES for t, _, line in imports(m) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_imports_of_the_package_are_at_the_top_of_each_file():
    local = [f"{m}:{line} imports {t} inside a function" for m in MODULES for t, top, line in imports(m) if not top]
    assert not local, "\n".join(local)


def test_no_import_circle():
    graph = {m: sorted({t for t, _, _ in imports(m)}) for m in MODULES}
    index, low, on_stack, stack, circles, counter = {}, {}, set(), [], [], [0]

    def visit(m):  # Tarjan's strongly connected components
        index[m] = low[m] = counter[0]
        counter[0] += 1
        stack.append(m)
        on_stack.add(m)
        for t in graph[m]:
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on_stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                component.append(t)
                if t == m:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for m in graph:
        if m not in index:
            visit(m)
    assert not circles, f"modules that import each other in a circle: {circles}"


def test_import_paths_from_before_the_layers_still_work():
    """Every module that moved answers at its old path (softprompt._moved), and the names the docs
    import from the old paths are there."""
    import importlib

    from softprompt._moved import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    from softprompt.build import (  # noqa: F401
        build_classifier_for,
        build_rl,
        load_trained_classifier,
        task_of,
    )
    from softprompt.diversity import (  # noqa: F401
        distinct_n,
        embedding_diversity,
        encode,
        pass_at_k,
        self_bleu,
    )
    from softprompt.evaluation import evaluate, make_batch  # noqa: F401
    from softprompt.peft_interop import export_peft, import_peft  # noqa: F401
    from softprompt.prompts import PromptsSection, load_prompts  # noqa: F401
    from softprompt.trainer import Trainer  # noqa: F401

    from softprompt.experiment import from_dict, resolve  # noqa: F401
