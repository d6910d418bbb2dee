"""Dashboard JSON files: build, render, write and compare with the committed ones.

The committed files under ``dashboards/json/`` are what Grafana's file provisioning
(``deploy/compose.yaml``) loads; ``tests/test_dashboards.py`` checks they equal this
generator's output, so edit :mod:`dashboards.definitions` and run
``coverwatch dashboards generate`` rather than editing the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from dashboards.definitions import DASHBOARDS
from dashboards.model import DEFAULT_DATASOURCE_UID, JSON

COMMITTED_DIR = Path(__file__).parent / "json"


def build_all(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict[str, JSON]:
    """File name (``fleet.json``, …) → dashboard model, bound to ``datasource_uid``."""
    return {f"{name}.json": build(datasource_uid) for name, build in DASHBOARDS.items()}


def render(model: JSON) -> str:
    """Stable text: two-space indent, keys in definition order, UTF-8, final newline."""
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path, datasource_uid: str = DEFAULT_DATASOURCE_UID) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, model in build_all(datasource_uid).items():
        path = directory / file_name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path = COMMITTED_DIR) -> list[str]:
    """Files in ``directory`` that differ from (or are missing from) the generator output."""
    expected = {name: render(model) for name, model in build_all().items()}
    stale = []
    for name, text in expected.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    extra = {path.name for path in directory.glob("*.json")} - set(expected)
    return sorted([*stale, *extra])
