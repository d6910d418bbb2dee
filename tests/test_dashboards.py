"""Dashboards as code: the committed JSON, its structure, and publishing to Grafana."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coverwatch.cli import main
from dashboards.generate import COMMITTED_DIR, build_all, render, stale_files
from dashboards.model import DATASOURCE_TYPE, DEFAULT_DATASOURCE_UID, GRID_WIDTH
from dashboards.publish import PublishError, grafana_api, publish, resolve_token

EXPECTED_FILES = {"fleet.json", "probe.json", "coverage.json", "outages.json"}


def test_committed_json_equals_the_generator_output() -> None:
    assert {path.name for path in COMMITTED_DIR.glob("*.json")} == EXPECTED_FILES
    for name, model in build_all().items():
        committed = (COMMITTED_DIR / name).read_text(encoding="utf-8")
        assert committed == render(model), (
            f"dashboards/json/{name} is out of date: run "
            "coverwatch dashboards generate -o dashboards/json"
        )
    assert stale_files() == []


def test_check_command_notices_a_hand_edited_file(tmp_path: Path) -> None:
    for name, model in build_all().items():
        (tmp_path / name).write_text(render(model), encoding="utf-8")
    assert stale_files(tmp_path) == []
    edited = json.loads((tmp_path / "fleet.json").read_text())
    edited["title"] = "edited by hand"
    (tmp_path / "fleet.json").write_text(json.dumps(edited))
    (tmp_path / "extra.json").write_text("{}")
    assert stale_files(tmp_path) == ["extra.json", "fleet.json"]


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


@pytest.mark.parametrize("uid", ["coverwatch-timescaledb", "another-datasource"])
def test_dashboards_are_structurally_valid(uid: str) -> None:
    models = build_all(uid)
    assert set(models) == EXPECTED_FILES
    uids = [model["uid"] for model in models.values()]
    assert len(set(uids)) == len(uids)
    for name, model in models.items():
        assert isinstance(model["schemaVersion"], int), name
        assert model["schemaVersion"] >= 36, name
        assert model["uid"].startswith("coverwatch-")
        assert len(model["uid"]) <= 40
        assert "id" not in model, "a dashboard id is per Grafana instance; only the uid is ours"
        assert model["title"]
        assert model["time"]["from"].startswith("now-")
        panels = model["panels"]
        ids = [panel["id"] for panel in panels]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        for panel in panels:
            grid = panel["gridPos"]
            assert set(grid) == {"h", "w", "x", "y"}
            assert grid["w"] > 0
            assert grid["h"] > 0
            assert grid["x"] + grid["w"] <= GRID_WIDTH
            if panel["type"] == "text":
                assert panel["options"]["content"]
                continue
            assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": uid}
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids)
            for target in panel["targets"]:
                assert target["datasource"] == {"type": DATASOURCE_TYPE, "uid": uid}
                assert target["rawQuery"] is True
                assert target["rawSql"].strip()
                assert target["format"] in ("time_series", "table")
        for index, panel in enumerate(panels):
            for other in panels[index + 1 :]:
                assert not _overlaps(panel["gridPos"], other["gridPos"]), (
                    f"{name}: {panel['title']!r} overlaps {other['title']!r}"
                )
        for variable in model["templating"]["list"]:
            assert variable["datasource"] == {"type": DATASOURCE_TYPE, "uid": uid}
            assert variable["query"].strip()
            used = any(
                f"${variable['name']}" in target["rawSql"]
                for panel in panels
                for target in panel.get("targets", [])
            )
            assert used, f"{name}: variable ${variable['name']} is never used"


def test_probe_dashboard_has_a_probe_variable_and_fleet_links_to_it() -> None:
    models = build_all()
    (variable,) = models["probe.json"]["templating"]["list"]
    assert variable["name"] == "probe"
    assert variable["type"] == "query"
    fleet_links = [
        prop["value"][0]["url"]
        for panel in models["fleet.json"]["panels"]
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "links"
    ]
    assert fleet_links
    assert all(url.startswith("/d/coverwatch-probe?var-probe=") for url in fleet_links)


def test_generate_command_writes_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboards", "generate", "-o", str(tmp_path), "--datasource-uid", "pg-1"]) == 0
    assert {path.name for path in tmp_path.glob("*.json")} == EXPECTED_FILES
    fleet = json.loads((tmp_path / "fleet.json").read_text(encoding="utf-8"))
    assert fleet["panels"][0]["datasource"]["uid"] == "pg-1"
    assert "wrote" in capsys.readouterr().out


def test_token_comes_from_flag_file_or_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("glsa_from_file\n")
    assert resolve_token("glsa_flag", token_file, {"GRAFANA_TOKEN": "glsa_env"}) == "glsa_flag"
    assert resolve_token(None, token_file, {"GRAFANA_TOKEN": "glsa_env"}) == "glsa_from_file"
    assert resolve_token(None, None, {"GRAFANA_TOKEN": "glsa_env"}) == "glsa_env"
    with pytest.raises(Exception, match="no Grafana token"):
        resolve_token(None, None, {})


# ------------------------------------------------------------- publishing to "Grafana"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """Records the requests grafana-client makes and answers like Grafana's HTTP API."""

    requests: list[Recorded] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)  # uid -> title
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> body
    refuse_with: int = 0

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if self.refuse_with:
            return self.refuse_with, {"message": "refused by the test"}
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            if uid not in self.folders:
                return 404, {"message": "folder not found"}
            return 200, {"uid": uid, "title": self.folders[uid], "id": 7}
        if method == "POST" and path == "/api/folders":
            if body["uid"] in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[body["uid"]] = body["title"]
            return 200, {"uid": body["uid"], "title": body["title"], "id": 7}
        if method == "POST" and path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            exists = uid in self.dashboards
            if exists and not body.get("overwrite"):
                return 412, {"message": "The dashboard has been changed by someone else"}
            if body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            self.dashboards[uid] = body
            version = sum(r.path == path for r in self.requests)
            return 200, {"status": "success", "uid": uid, "url": f"/d/{uid}", "version": version}
        return 404, {"message": "not found"}


@pytest.fixture
def fake_grafana() -> Iterator[tuple[str, FakeGrafana]]:
    """A tiny local HTTP server standing in for Grafana.

    No Grafana can run here, so this is the hardware-edge-style fake for a service we
    cannot run: the real grafana-client talks real HTTP to it, and the test checks what
    reached the wire (paths, bearer token, folder uid, overwrite). Grafana's own
    behaviour beyond these documented endpoints is not exercised.
    """
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path = self.path.split("?", 1)[0]
            state.requests.append(Recorded(self.command, path, dict(self.headers), body))
            status, answer = state.handle(self.command, path, body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-grafana", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_publish_creates_the_folder_once_and_overwrites_dashboards(
    fake_grafana: tuple[str, FakeGrafana],
) -> None:
    url, grafana = fake_grafana
    api = grafana_api(url, "glsa_test_token")
    first = publish(api, datasource_uid="pg-prod", folder_uid="cw", folder_title="Coverage")
    assert [item.uid for item in first] == [
        "coverwatch-fleet",
        "coverwatch-probe",
        "coverwatch-coverage",
        "coverwatch-outages",
    ]
    assert all(item.url == f"/d/{item.uid}" for item in first)
    calls = [(r.method, r.path) for r in grafana.requests]
    assert calls[:2] == [("GET", "/api/folders/cw"), ("POST", "/api/folders")]
    assert grafana.requests[1].body == {"title": "Coverage", "uid": "cw"}
    assert calls[2:] == [("POST", "/api/dashboards/db")] * 4
    for recorded in grafana.requests:
        assert recorded.headers["Authorization"] == "Bearer glsa_test_token"
    for recorded in grafana.requests[2:]:
        body = recorded.body
        assert body["overwrite"] is True
        assert body["folderUid"] == "cw"
        assert "id" not in body["dashboard"]
        for panel in body["dashboard"]["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "pg-prod"

    grafana.requests.clear()
    again = publish(api, datasource_uid="pg-prod", folder_uid="cw", folder_title="Coverage")
    assert [(r.method, r.path) for r in grafana.requests] == [
        ("GET", "/api/folders/cw"),
        *[("POST", "/api/dashboards/db")] * 4,
    ], "a second publish must not create the folder again"
    assert [item.uid for item in again] == [item.uid for item in first]
    assert len(grafana.dashboards) == 4
    assert list(grafana.folders) == ["cw"]


def test_publish_command_reads_the_token_from_the_environment(
    fake_grafana: tuple[str, FakeGrafana],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, grafana = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_env_token")
    assert main(["dashboards", "publish", "--url", url]) == 0
    assert grafana.requests[0].headers["Authorization"] == "Bearer glsa_env_token"
    assert set(grafana.dashboards) == {
        "coverwatch-fleet",
        "coverwatch-probe",
        "coverwatch-coverage",
        "coverwatch-outages",
    }
    first = next(iter(grafana.dashboards.values()))
    assert first["folderUid"] == "coverwatch"
    assert first["dashboard"]["panels"][0]["datasource"]["uid"] == DEFAULT_DATASOURCE_UID
    assert capsys.readouterr().out.count("published") == 4


def test_publish_explains_a_refused_token(fake_grafana: tuple[str, FakeGrafana]) -> None:
    url, grafana = fake_grafana
    grafana.refuse_with = 403
    with pytest.raises(PublishError, match="Editor role") as refused:
        publish(grafana_api(url, "glsa_weak"))
    assert refused.value.status == 403
    assert "glsa_weak" not in str(refused.value)
