"""Imports run one way: nets -> memory -> strategies -> models -> entry points. A test fails if a package imports one
above it (a cycle in the making), wherever in the file the import stands (lazy imports inside functions count)."""

import ast
from pathlib import Path

import lossy_memory

ROOT = Path(lossy_memory.__file__).parent
# Each layer may import itself and the layers before it. data/ and metrics/ are leaves beside nets/ (torch only).
LAYERS = ["nets", "memory", "strategies", "models"]
LEAVES = {"nets", "data", "metrics"}
# Top-level helpers that models use, with what they may import themselves (checkpoints: reading a run's checkpoint;
# writers: writing a run's results files).
HELPERS = {"checkpoints": {"memory"}, "writers": set()}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "lossy_memory" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_no_package_imports_a_layer_above_it():
    wrong = []
    for layer_index, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: layer_index + 1]) | LEAVES | (set(HELPERS) if layer == "models" else set())
        for path in (ROOT / layer).rglob("*.py"):
            for target in imported_packages(path) - allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports lossy_memory.{target}")
    for leaf in LEAVES - {"nets"}:
        for path in (ROOT / leaf).rglob("*.py"):
            for target in imported_packages(path) - {leaf}:
                wrong.append(f"{path.relative_to(ROOT)} imports lossy_memory.{target}")
    for helper, allowed in HELPERS.items():
        for target in imported_packages(ROOT / f"{helper}.py") - allowed:
            wrong.append(f"{helper}.py imports lossy_memory.{target}")
    assert not wrong, "imports against the layering nets -> memory -> strategies -> models:\n" + "\n".join(sorted(wrong))


def test_the_check_sees_a_lazy_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lossy_memory.models import DiscreteVAE\n    import lossy_memory.strategies.base\n")
    assert imported_packages(source) == {"models", "strategies"}
