"""Upload the dashboards to a running Grafana with grafana-client.

Idempotent: the folder is looked up by its fixed uid and created only when missing, and
each dashboard is posted with its fixed uid and ``overwrite: true``, so publishing twice
leaves one copy of each (Grafana keeps the previous versions in its history). The
dashboards are bound to the datasource by uid (``--datasource-uid``).

Dashboards that Grafana provisions from files (the compose stack does) cannot be
overwritten through the API; publish to a Grafana that does not provision them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coverwatch.errors import CoverwatchError
from dashboards.generate import build_all
from dashboards.model import DEFAULT_DATASOURCE_UID, JSON

logger = logging.getLogger("coverwatch.dashboards")

TOKEN_ENV = "GRAFANA_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_FOLDER_UID = "coverwatch"
DEFAULT_FOLDER_TITLE = "coverwatch"


class PublishError(CoverwatchError):
    """Grafana refused something; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Published:
    uid: str
    title: str
    url: str
    version: int | None


def resolve_token(
    token: str | None, token_file: Path | None, environ: dict[str, str] | None = None
) -> str:
    """``--token``, else ``--token-file``, else ``$GRAFANA_TOKEN``."""
    if token:
        return token
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise CoverwatchError(
                f"cannot read the Grafana token file {token_file}: {error.strerror}"
            ) from None
        if not text:
            raise CoverwatchError(f"the Grafana token file {token_file} is empty")
        return text
    env = os.environ if environ is None else environ
    from_env = env.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    raise CoverwatchError(
        "no Grafana token: pass --token-file FILE (or --token, or set GRAFANA_TOKEN) with a "
        "service account token that has the Editor role "
        "(Grafana: Administration → Service accounts)"
    )


def grafana_api(url: str, token: str, *, timeout_s: float = 30.0) -> Any:
    from grafana_client.api import GrafanaApi

    # grafana-client joins the URL path and "api" without a slash: give it one.
    base = url if url.endswith("/") else f"{url}/"
    return GrafanaApi.from_url(base, credential=token, timeout=timeout_s)


def ensure_folder(api: Any, uid: str, title: str) -> bool:
    """Create the folder unless it exists; True when it was created."""
    from grafana_client.client import GrafanaException

    try:
        api.folder.get_folder(uid)
    except GrafanaException as error:
        if error.status_code != 404:
            raise _publish_error(f"cannot look up folder {uid!r}", error) from None
    except OSError as error:  # niquests' connection errors are OSErrors
        raise PublishError(f"cannot reach Grafana: {error}") from None
    else:
        return False
    try:
        api.folder.create_folder(title, uid=uid)
    except GrafanaException as error:
        raise _publish_error(f"cannot create folder {title!r}", error) from None
    logger.info("created folder %s (%s)", title, uid)
    return True


def publish(
    api: Any,
    *,
    datasource_uid: str = DEFAULT_DATASOURCE_UID,
    folder_uid: str = DEFAULT_FOLDER_UID,
    folder_title: str = DEFAULT_FOLDER_TITLE,
    dashboards: dict[str, JSON] | None = None,
) -> list[Published]:
    from grafana_client.client import GrafanaException

    ensure_folder(api, folder_uid, folder_title)
    models = dashboards if dashboards is not None else build_all(datasource_uid)
    published = []
    for model in models.values():
        body = {
            # No "id": Grafana matches on uid, so the same uid replaces the same dashboard.
            "dashboard": {key: value for key, value in model.items() if key != "id"},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "coverwatch dashboards publish",
        }
        try:
            answer = api.dashboard.update_dashboard(body)
        except GrafanaException as error:
            raise _publish_error(f"cannot publish {model['title']!r}", error) from None
        answer = answer if isinstance(answer, dict) else {}
        published.append(
            Published(
                uid=str(answer.get("uid", model["uid"])),
                title=str(model["title"]),
                url=str(answer.get("url", "")),
                version=answer.get("version"),
            )
        )
    return published


def _publish_error(what: str, error: Any) -> PublishError:
    status = int(getattr(error, "status_code", 0) or 0)
    hint = {
        401: "the token is not valid (expired or mistyped?)",
        403: "the token's service account needs the Editor role",
        412: "a dashboard with this title exists in the folder with another uid; rename it",
    }.get(status, "")
    message = getattr(error, "message", None) or str(error)
    detail = f"{what}: Grafana answered {status or 'nothing'}: {message}"
    return PublishError(f"{detail}; {hint}" if hint else detail, status=status)
