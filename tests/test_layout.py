"""The architecture is visible from the tree: imports only point down the layer list.

    ops -> layers -> models (data, metrics, runtime, optim beside them) -> convert, opcount
    -> loading -> tasks -> training -> cli -> the entry points at the repository root

A module may import from its own layer or a lower one, never from a higher one (the README's
Layout section and ../shared/STYLE.md describe the same order).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "addernet_jax"

# Package or module under addernet_jax -> its layer (lower numbers sit lower).
LAYERS = {
    "xla_cpu": 0, "ops": 0,
    "layers": 1,
    "models": 2, "data": 2, "metrics": 2, "runtime": 2, "optim": 2,
    "convert": 3, "opcount": 3, "quantize": 3,
    "loading": 4,
    "tasks": 5,
    "training": 6,
    "figures": 7, "cli": 7,
}


def layer_of(module: str) -> int | None:
    """The layer of 'addernet_jax.x.y' (None for the package itself and foreign modules)."""
    parts = module.split(".")
    if parts[0] != "addernet_jax" or len(parts) < 2 or parts[1] == "__init__":
        return None
    return LAYERS[parts[1]]


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_every_package_has_a_layer():
    children = {p.stem for p in PACKAGE.iterdir()
                if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem != "__init__"}
    assert children <= set(LAYERS), sorted(children - set(LAYERS))


def test_imports_only_point_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        source = ".".join(relative.parts)
        own = layer_of(source)
        if own is None:
            continue
        for target in imports_of(path):
            layer = layer_of(target)
            if layer is not None and layer > own:
                upward.append(f"{source} (layer {own}) imports {target} (layer {layer})")
    assert not upward, "\n".join(upward)


def test_entry_points_hold_no_logic():
    root = PACKAGE.parent
    for script in ("train.py", "evaluate.py", "convert_torch_weights.py", "count_ops.py",
                   "plot_features.py", "plot_curves.py", "plot_ops.py"):
        tree = ast.parse((root / script).read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert not functions, f"{script} defines {[f.name for f in functions]}"
        assert len((root / script).read_text().splitlines()) < 25
