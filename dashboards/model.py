"""Plain-dict builders for Grafana dashboard JSON (no dependency beyond the standard library).

A dashboard is a list of rows; a row is a list of panels laid side by side, each with a
width in Grafana's 24-column grid. :func:`dashboard` numbers the panels and computes every
``gridPos``, so the definitions in :mod:`dashboards.definitions` only say what a panel
shows. Every target carries its datasource reference (type and uid): that is what binds a
published dashboard to the TimescaleDB datasource, whatever its name in Grafana.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Grafana's core PostgreSQL datasource plugin id since Grafana 10.3 ("postgres" before).
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DEFAULT_DATASOURCE_UID = "coverwatch-timescaledb"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x dashboard schema
GRID_WIDTH = 24

Format = Literal["time_series", "table"]
JSON = dict[str, Any]


@dataclass(frozen=True)
class Panel:
    """One panel: what it shows; position and id are filled in by :func:`dashboard`."""

    title: str
    type: str  # timeseries, stat, table, barchart, state-timeline, text
    sql: str | tuple[str, ...] = ()
    format: Format = "time_series"
    width: int = 12
    height: int = 8
    description: str = ""
    unit: str = ""
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    thresholds: tuple[tuple[float | None, str], ...] = ()
    overrides: tuple[tuple[str, JSON], ...] = ()  # (column name, field config) pairs
    options: JSON = field(default_factory=dict)
    custom: JSON = field(default_factory=dict)
    content: str = ""  # text panels only

    @property
    def queries(self) -> tuple[str, ...]:
        return (self.sql,) if isinstance(self.sql, str) else self.sql


def datasource_ref(uid: str) -> JSON:
    return {"type": DATASOURCE_TYPE, "uid": uid}


def query_variable(
    name: str,
    label: str,
    sql: str,
    datasource_uid: str,
    *,
    multi: bool = False,
    include_all: bool = False,
) -> JSON:
    """A template variable whose values come from a SQL query (first column)."""
    variable: JSON = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource_ref(datasource_uid),
        "definition": sql,
        "query": sql,
        "refresh": 1,  # on dashboard load
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "hide": 0,
        "options": [],
        "current": {},
    }
    return variable


def _target(sql: str, ref_id: str, fmt: Format, datasource_uid: str) -> JSON:
    return {
        "refId": ref_id,
        "datasource": datasource_ref(datasource_uid),
        "editorMode": "code",
        "rawQuery": True,
        "format": fmt,
        "rawSql": sql.strip(),
    }


def _field_config(panel: Panel) -> JSON:
    defaults: JSON = {}
    if panel.unit:
        defaults["unit"] = panel.unit
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        }
        defaults["color"] = {"mode": "thresholds"}
    if panel.custom:
        defaults["custom"] = dict(panel.custom)
    overrides = [
        {
            "matcher": {"id": "byName", "options": column},
            "properties": [{"id": key, "value": value} for key, value in props.items()],
        }
        for column, props in panel.overrides
    ]
    return {"defaults": defaults, "overrides": overrides}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int, datasource_uid: str) -> JSON:
    body: JSON = {
        "id": panel_id,
        "type": panel.type,
        "title": panel.title,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
    }
    if panel.description:
        body["description"] = panel.description
    if panel.type == "text":
        body["options"] = {"mode": "markdown", "content": panel.content.strip(), **panel.options}
        return body
    body["datasource"] = datasource_ref(datasource_uid)
    body["targets"] = [
        _target(sql, chr(ord("A") + index), panel.format, datasource_uid)
        for index, sql in enumerate(panel.queries)
    ]
    body["fieldConfig"] = _field_config(panel)
    body["options"] = dict(panel.options)
    return body


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    rows: list[list[Panel]],
    datasource_uid: str,
    variables: list[JSON] | None = None,
    time_from: str = "now-24h",
    refresh: str = "1m",
    links: list[JSON] | None = None,
) -> JSON:
    """Assemble a dashboard: ids numbered from 1, rows stacked top to bottom."""
    panels: list[JSON] = []
    y = 0
    panel_id = 1
    for row in rows:
        if sum(panel.width for panel in row) > GRID_WIDTH:
            raise ValueError(f"{title}: a row is wider than {GRID_WIDTH} columns")
        x = 0
        for panel in row:
            panels.append(_panel_json(panel, panel_id, x, y, datasource_uid))
            panel_id += 1
            x += panel.width
        y += max(panel.height for panel in row)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["coverwatch"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": links or [],
        "templating": {"list": variables or []},
        "panels": panels,
    }
