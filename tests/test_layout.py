"""The package layout: one import name (``ncap``), layers that only import downward, no import cycles and no
private name imported across modules. Checked on the source tree with the standard library's ``ast``."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# each imports only from lower numbers; the method (capacitance) and network science (network) share layer 0
# and import nothing from each other (test_the_method_and_network_science_are_separate)
LAYERS = {"capacitance": 0, "network": 0, "models": 1, "bench": 2, "service": 3}
# ncap/'s own subpackages and modules, with the layer they sit at: the AutoML integrations use the method only;
# the JSON writer every layer uses imports none of them (layer -1)
PACKAGE_LAYERS = {"integrations": 1, "jsonsafe": -1}
STRING_IMPORTERS = {"import_module", "resolve_name"}  # importlib.import_module("..."), pkgutil.resolve_name("...")


def source_modules() -> dict[str, Path]:
    """``ncap.<layer>.<...>`` module name -> file, for every .py file under the layer folders and ncap/'s
    subpackages."""
    roots = [(ROOT / layer, ("ncap", layer)) for layer in LAYERS]
    roots += [(ROOT / "ncap" / pkg, ("ncap", pkg)) for pkg in PACKAGE_LAYERS if (ROOT / "ncap" / pkg).is_dir()]
    mods = {f"ncap.{pkg}": ROOT / "ncap" / f"{pkg}.py" for pkg in PACKAGE_LAYERS
            if (ROOT / "ncap" / f"{pkg}.py").is_file()}
    for folder, prefix in roots:
        for path in folder.rglob("*.py"):
            parts = (*prefix, *path.relative_to(folder).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def string_import(node: ast.AST) -> str | None:
    """The module a call ``import_module("a.b")`` / ``resolve_name("a.b:c")`` names (an f-string: its constant
    prefix up to the last dot before the first placeholder), else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
    if func not in STRING_IMPORTERS:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value.split(":")[0]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value).split(":")[0].rpartition(".")[0] or None
    return None


def imports_of(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module, imported attribute or None) for every import statement, relative ones resolved."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out += [(base, a.name) for a in node.names]
        elif (named := string_import(node)) is not None:
            out.append((named, None))
    return out


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "ncap":
        return None
    return LAYERS.get(parts[1], PACKAGE_LAYERS.get(parts[1]))


def import_graph() -> tuple[dict[str, set[str]], list[str], list[str]]:
    """(edges between source modules, upward imports, private names imported across modules)."""
    mods = source_modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    upward, private = [], []
    for name, path in mods.items():
        for module, attr in imports_of(name, path):
            target_layer = layer_of(module)
            if target_layer is None:
                continue
            if target_layer > layer_of(name):
                upward.append(f"{name} imports {module}")
            dest = f"{module}.{attr}" if attr and f"{module}.{attr}" in mods else module
            if dest in mods and dest != name:
                edges[name].add(dest)
            if attr and attr.startswith("_") and not attr.startswith("__") and dest != name:
                private.append(f"{name} imports {module}.{attr}")
    return edges, upward, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (a package importing its own submodules in
    its ``__init__`` re-exports is not counted)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    names = sorted(edges)
    index = {n: i for i, n in enumerate(names)}
    rows = [index[a] for a in names for b in edges[a] if not (b.startswith(a + ".") or a.startswith(b + "."))]
    cols = [index[b] for a in names for b in edges[a] if not (b.startswith(a + ".") or a.startswith(b + "."))]
    graph = csr_matrix(([1] * len(rows), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(graph, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for n, lab in zip(names, labels):
        groups.setdefault(int(lab), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def test_layers_only_import_downward_without_cycles_or_private_names():
    edges, upward, private = import_graph()
    assert not upward, upward
    assert not private, private
    assert not cycles(edges), cycles(edges)


def test_the_method_and_network_science_are_separate():
    """capacitance/ (the β_eff method) and network/ (masks, degrees, power laws) share layer 0 but neither imports
    the other, and the method reads in at most six files."""
    edges, _, _ = import_graph()
    for a, b in (("ncap.capacitance", "ncap.network"), ("ncap.network", "ncap.capacitance")):
        crossing = [f"{m} -> {d}" for m, ds in edges.items() if m.startswith(a) for d in ds if d.startswith(b)]
        assert not crossing, crossing
    method = [p for p in (ROOT / "capacitance").glob("*.py") if p.name != "__init__.py"]
    assert len(method) <= 6, sorted(p.name for p in method)
    assert not [p for p in (ROOT / "capacitance").iterdir() if p.is_dir() and p.name != "__pycache__"]


def test_the_checker_catches_what_it_should(tmp_path):
    """The three rules fire on a planted example (so the test above can fail)."""
    edges = {"ncap.models.a": {"ncap.models.b"}, "ncap.models.b": {"ncap.models.a"}, "ncap.models.c": set()}
    assert cycles(edges) == [["ncap.models.a", "ncap.models.b"]]
    path = tmp_path / "x.py"
    path.write_text("from ncap.service.api import NcapService\nfrom .harness import _secret\nimport pkgutil\n"
                    "f = pkgutil.resolve_name('ncap.service.executors:RayExecutor')\n"
                    "g = importlib.import_module(f'ncap.service.{name}')\n")
    assert imports_of("ncap.models.x", path) == [("ncap.service.api", "NcapService"),
                                                 ("ncap.models.harness", "_secret"), ("pkgutil", None),
                                                 ("ncap.service.executors", None), ("ncap.service", None)]
    assert layer_of("ncap.service.api") > layer_of("ncap.models.x")
    assert layer_of("ncap.bench.x") > layer_of("ncap.integrations.rule") > layer_of("ncap.capacitance.x")


def test_every_subpackage_is_installed():
    """pyproject's explicit package list covers every folder with an __init__.py under the layers."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    wanted = {"ncap"} | {name for name, path in source_modules().items() if path.name == "__init__.py"}
    wanted |= {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ncap").rglob("__init__.py")}
    assert set(config["packages"]) == wanted
    for layer in LAYERS:
        assert config["package-dir"][f"ncap.{layer}"] == layer


@pytest.mark.slow
def test_wheel_installs_only_ncap(tmp_path):
    """``pip install`` puts one top-level package, ``ncap``, into site-packages: no ``models``, ``service``
    or ``bench`` to collide with a user's own folders."""
    src = tmp_path / "src"  # a copy: setuptools writes build/ next to the sources
    for folder in ["ncap", *LAYERS]:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("ncap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"ncap"}
    for module in ("ncap/capacitance/beta_eff.py", "ncap/models/recipe.py", "ncap/service/api.py",
                   "ncap/bench/runs.py", "ncap/network/powerlaw.py"):
        assert module in names, module
