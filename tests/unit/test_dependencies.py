"""pyproject.toml declares what the package imports (issue #9): every third-party module imported in evo2lite/,
kernels/ and pipelines/ is a dependency or an optional extra; an extra is imported inside a function, in a file
whose error message names `evo2lite[extra]`; no declared dependency is left unused; torch's range accepts the
releases we test (2.11, 2.13) and names no CUDA build."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"evo2lite", "kernels", "pipelines"}
# import name -> distribution name, where they differ
DISTRIBUTION = {"Bio": "biopython", "yaml": "pyyaml"}
# imported only where a dependency guarantees it: click is typer's (the fallback for a typer without its
# vendored copy, which depends on click itself)
TRANSITIVE = {"click": "typer"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_norm(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    extras = {_norm(Requirement(r).name): extra for extra, reqs in project["optional-dependencies"].items()
              if extra != "dev" for r in reqs}
    return core, extras


def _imports():
    """(file, top-level module, at module level?, in a try/except ImportError (body or fallback)?) per import."""
    found = []

    def visit(node, path, top, guarded):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.ImportFrom) and child.level:
                    continue
                names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module]
                for name in names:
                    found.append((path, name.split(".")[0], top, guarded))
                continue
            in_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            catches = isinstance(child, ast.Try) and any(
                h.type is None or "ImportError" in ast.unparse(h.type) for h in child.handlers)
            if isinstance(child, ast.Try):  # the body and its ImportError fallback; not else/finally
                for part in (*child.body, *(s for h in child.handlers for s in h.body)):
                    visit_one(part, path, top, guarded or catches)
                for part in (*child.orelse, *child.finalbody):
                    visit_one(part, path, top, guarded)
            else:
                visit(child, path, top and not in_function, guarded)

    def visit_one(stmt, path, top, guarded):
        wrapper = ast.Module(body=[stmt], type_ignores=[])
        visit(wrapper, path, top, guarded)

    for root in sorted(FIRST_PARTY):
        for path in sorted((REPO / root).rglob("*.py")):
            visit(ast.parse(path.read_text()), path.relative_to(REPO), True, False)
    return [(p, m, top, g) for p, m, top, g in found if m not in sys.stdlib_module_names and m not in FIRST_PARTY]


def test_every_import_is_declared():
    core, extras = _pyproject()
    problems = []
    for path, module, top, guarded in _imports():
        dist = _norm(DISTRIBUTION.get(module, module))
        if dist in core:
            continue
        if module in TRANSITIVE and _norm(TRANSITIVE[module]) in core and guarded:
            continue
        if dist in extras:
            extra = extras[dist]
            if top:
                problems.append(f"{path}: the {extra} extra's {module} is imported at module level")
            if f"evo2lite[{extra}]" not in (REPO / path).read_text():
                problems.append(f"{path}: imports {module} without an error naming evo2lite[{extra}]")
            continue
        problems.append(f"{path}: imports {module}, which pyproject.toml does not declare")
    assert not problems, "\n".join(problems)


def test_no_declared_dependency_is_unused():
    core, extras = _pyproject()
    imported = {_norm(DISTRIBUTION.get(m, m)) for _, m, _, _ in _imports()}
    assert sorted(set(core) - imported) == [] and sorted(set(extras) - imported) == []


def test_torch_range_accepts_the_tested_releases():
    torch = _pyproject()[0]["torch"]
    for release in ("2.11.0", "2.13.0"):
        assert torch.specifier.contains(Version(release)), (release, str(torch.specifier))
    assert "+" not in str(torch) and torch.url is None  # no local (CUDA) build, no index URL
    assert all(spec.operator != "==" for spec in torch.specifier)


def test_optional_and_platform_modules_load_lazily():
    code = ("import sys, evo2lite, evo2lite.cli, evo2lite.model, evo2lite.mixers; "
            "print(' '.join(m for m in ('triton', 'matplotlib', 'mmaemu') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""
