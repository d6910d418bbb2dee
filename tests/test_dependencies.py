"""Every third-party package a component imports is declared in that component's extra.

A library that only arrives as another one's dependency (numpy through shapely, jinja2
through folium) can disappear with that library's next release; and the probe must install
with ``.[agent]`` alone, so what agent/ imports must be in that extra, not in ``server``.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest

from tests.helpers import REPO

OURS = {"coverwatch", "agent", "collector", "geo", "dashboards", "provisioning", "simulator"}

# Where each part of the tree runs, as the extras installed there (core always).
EXTRAS_OF = {
    "coverwatch": (),
    "coverwatch/localservices": ("embedded",),  # the throwaway broker and PostgreSQL
    "agent": ("agent",),
    "collector": ("server",),
    "geo": ("server",),
    "dashboards": ("server",),
    "provisioning": ("server",),
    "simulator": ("server", "embedded"),  # make demo
}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def declared(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {_name(requirement) for requirement in project["dependencies"]}
    for extra in extras:
        names |= {_name(requirement) for requirement in project["optional-dependencies"][extra]}
    return names


def third_party_imports(folder: str) -> dict[str, str]:
    """Top-level third-party modules imported under ``folder``: name -> where first seen."""
    nested = [other for other in EXTRAS_OF if other.startswith(folder + "/")]
    found: dict[str, str] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if any(relative.startswith(other + "/") for other in nested):
            continue  # checked against its own extras
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS:
                    found.setdefault(top, f"{relative}:{node.lineno}")
    return found


@pytest.mark.parametrize("folder", sorted(EXTRAS_OF))
def test_what_a_component_imports_is_declared_in_its_extra(folder: str) -> None:
    extras = EXTRAS_OF[folder]
    allowed = declared(extras)
    distributions = packages_distributions()
    undeclared = []
    for module, where in sorted(third_party_imports(folder).items()):
        names = {_name(name) for name in distributions.get(module, [])}
        if not names & allowed:
            undeclared.append(f"{module} ({where}; from {sorted(names) or 'nothing installed'})")
    extra = (
        f"the {' and '.join(extras)} extra{'s' if len(extras) > 1 else ''}"
        if extras
        else "the core dependencies"
    )
    assert not undeclared, f"declare in {extra} of pyproject.toml: {'; '.join(undeclared)}"
