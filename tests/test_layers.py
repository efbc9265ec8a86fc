"""The import rule of docs/architecture.md: lower layers never import higher ones or Lightning."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "streamseg"

# package -> streamseg packages it must not import
FORBIDDEN = {
    "models": {"data", "metrics", "engine", "config", "cli", "viz", "integrations", "api"},
    "data": {"models", "metrics", "engine", "config", "cli", "viz", "integrations", "api"},
    "metrics": {"models", "data", "engine", "config", "cli", "viz", "integrations", "api"},
    "config": {"models", "data", "metrics", "engine", "cli", "viz", "integrations", "api"},
    "engine": {"cli", "integrations", "api"},
    "integrations": {"cli"},
    "deploy": {"cli", "integrations"},
    "search": {"cli"},
    "extract": {"cli", "integrations", "search"},
    "viz": {"engine", "cli", "models", "data", "integrations"},
    # single modules (streamseg/<name>.py)
    "api": {"cli"},  # the library's Python API never depends on the command line
    "evaluate": {"cli", "api", "engine", "integrations", "search", "deploy"},
}
NO_LIGHTNING = {"models", "data", "metrics", "config", "viz"}


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by `path` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["streamseg", *path.relative_to(SRC).parent.parts]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package):
    bad = []
    module = SRC / f"{package}.py"
    paths = [module] if module.is_file() else sorted((SRC / package).rglob("*.py"))
    assert paths, f"no streamseg.{package}"
    for path in paths:
        for mod in imports_of(path):
            parts = mod.split(".")
            if parts[0] == "streamseg" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
            if package in NO_LIGHTNING and parts[0] in {"pytorch_lightning", "lightning", "lightning_fabric"}:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_checker_sees_relative_imports(tmp_path):
    # the rule is only as good as the parser: a relative import must resolve to its absolute name
    mods = imports_of(SRC / "engine" / "evaluation.py")
    assert "streamseg.metrics" in mods


# model classes that only their own recipe module names (engine/recipes/<family>.py)
MODEL_SPECIFIC = {"ASRF", "ASRFLoss", "ASRFLossParams", "C2FTCN", "DiffAct", "DiffActLoss", "DiffActLossParams",
                  "Transeger"}


def test_generic_engine_code_names_no_model_and_no_per_model_recipe():
    """The engine reaches models through the contract (`models.hooks` for optional parts); per-model code
    lives in `engine/recipes/<family>.py`, which only experiment configs import."""
    recipes = SRC / "engine" / "recipes"
    families = {p.stem for p in recipes.glob("*.py")} - {"__init__", "common"}
    bad = []
    for path in sorted((SRC / "engine").rglob("*.py")):
        if path.parent == recipes and path.stem in families:
            continue
        for mod in imports_of(path):
            parts = mod.split(".")
            if parts[:2] == ["streamseg", "models"] and parts[-1] in MODEL_SPECIFIC:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
            if parts[:3] == ["streamseg", "engine", "recipes"] and len(parts) > 3 and parts[3] in families:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
    assert families >= {"asrf", "diffact", "transeger"}
    assert not bad, "\n".join(bad)
