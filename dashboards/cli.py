"""``coverwatch dashboards generate|check|publish``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coverwatch.errors import CoverwatchError
from dashboards.model import DEFAULT_DATASOURCE_UID
from dashboards.publish import DEFAULT_FOLDER_TITLE, DEFAULT_FOLDER_UID, TOKEN_ENV


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dashboards",
        help="Grafana dashboards as code: generate the JSON or publish to a Grafana",
        description="The fleet, probe, coverage and outage dashboards, generated from "
        "dashboards/definitions.py.",
    )
    actions = parser.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)

    generate = actions.add_parser("generate", help="write the dashboard JSON files")
    generate.add_argument(
        "-o", "--output", type=Path, required=True, help="directory to write *.json into"
    )
    generate.add_argument(
        "--datasource-uid",
        default=DEFAULT_DATASOURCE_UID,
        help=f"uid of the PostgreSQL/TimescaleDB datasource (default: {DEFAULT_DATASOURCE_UID})",
    )
    generate.set_defaults(handler=_generate)

    check = actions.add_parser(
        "check", help="exit 1 if dashboards/json/ differs from the generator's output"
    )
    check.set_defaults(handler=_check)

    publish = actions.add_parser(
        "publish",
        help="upload the dashboards to Grafana (idempotent: same uids, overwrite)",
        description="Upload every dashboard into a folder (created when missing), bound to "
        f"the datasource by uid. The token comes from --token, --token-file or ${TOKEN_ENV}.",
    )
    publish.add_argument(
        "--url", required=True, help="Grafana base URL, e.g. https://grafana.example.org"
    )
    publish.add_argument(
        "--token", help=f"service account token (prefer --token-file or ${TOKEN_ENV})"
    )
    publish.add_argument("--token-file", type=Path, help="file holding the token")
    publish.add_argument(
        "--datasource-uid",
        default=DEFAULT_DATASOURCE_UID,
        help=f"uid of the datasource in that Grafana (default: {DEFAULT_DATASOURCE_UID})",
    )
    publish.add_argument("--folder-uid", default=DEFAULT_FOLDER_UID, help="folder uid")
    publish.add_argument("--folder", default=DEFAULT_FOLDER_TITLE, help="folder title")
    publish.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    publish.set_defaults(handler=_publish)


def _generate(args: argparse.Namespace) -> int:
    from dashboards.generate import write_all

    for path in write_all(args.output, args.datasource_uid):
        print(f"wrote {path}")
    return 0


def _check(_: argparse.Namespace) -> int:
    from dashboards.generate import COMMITTED_DIR, stale_files

    stale = stale_files()
    if stale:
        print(
            f"out of date in {COMMITTED_DIR}: {', '.join(stale)}; run: "
            f"coverwatch dashboards generate -o {COMMITTED_DIR}"
        )
        return 1
    print(f"{COMMITTED_DIR}: up to date")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from dashboards.publish import grafana_api, publish, resolve_token

    token = resolve_token(args.token, args.token_file)
    if not args.url.startswith(("http://", "https://")):
        raise CoverwatchError(f"--url {args.url!r}: write it as https://host[:port][/path]")
    api = grafana_api(args.url, token, timeout_s=args.timeout)
    for item in publish(
        api,
        datasource_uid=args.datasource_uid,
        folder_uid=args.folder_uid,
        folder_title=args.folder,
    ):
        version = f" (version {item.version})" if item.version is not None else ""
        print(f"published {item.title}: {item.url or item.uid}{version}")
    return 0
