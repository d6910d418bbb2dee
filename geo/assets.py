"""The map's JavaScript and CSS, served by coverwatch itself: the map works without internet.

Leaflet 1.9.4 and Leaflet.markercluster 1.5.3 are vendored in ``geo/static/`` from their
npm packages (``npm pack leaflet@1.9.4 leaflet.markercluster@1.5.3``, ``dist/`` files,
source-map comments removed; licences beside them), with coverwatch's own map code in
``geo/static/coverwatch/``. folium's CDN defaults (Leaflet from jsDelivr, jQuery,
Bootstrap, Font Awesome, awesome-markers) are replaced, not loaded: the map needs none
of them.

Pages are rendered with placeholder URLs (``cw-asset:leaflet/leaflet.js``) which are then
either pointed at a URL prefix (``/static`` for the HTTP server) or inlined, images in
the CSS as ``data:`` URIs (a standalone HTML file that works offline).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path
from typing import Final

STATIC_DIR: Final = Path(__file__).parent / "static"
PLACEHOLDER: Final = "cw-asset:"

# In load order.
MAP_JS: Final = (
    "leaflet/leaflet.js",
    "markercluster/leaflet.markercluster.js",
    "coverwatch/map.js",
)
MAP_CSS: Final = (
    "leaflet/leaflet.css",
    "markercluster/MarkerCluster.css",
    "coverwatch/map.css",
)

_SCRIPT = re.compile(r'<script src="' + PLACEHOLDER + r'([^"]+)"></script>')
_LINK = re.compile(r'<link rel="stylesheet" href="' + PLACEHOLDER + r'([^"]+)"\s*/?>')
_CSS_URL = re.compile(r"url\((['\"]?)(?!data:|#|https?:)([^)'\"]+)\1\)")
_REMOTE = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)


class AssetError(RuntimeError):
    """A page would load something from the internet, or an asset is missing."""


def asset_path(name: str) -> Path:
    """The file of a static asset; rejects anything outside ``geo/static``."""
    path = (STATIC_DIR / name).resolve()
    if STATIC_DIR.resolve() not in path.parents or not path.is_file():
        raise AssetError(f"no static asset {name!r} in {STATIC_DIR}")
    return path


def js_links() -> list[tuple[str, str]]:
    """``(name, url)`` pairs in folium's ``default_js`` shape, with placeholder URLs."""
    return [(Path(name).stem, PLACEHOLDER + name) for name in MAP_JS]


def css_links() -> list[tuple[str, str]]:
    return [(Path(name).stem + "_css", PLACEHOLDER + name) for name in MAP_CSS]


def link_assets(html: str, base_url: str) -> str:
    """Point placeholder URLs at ``base_url`` (e.g. ``/static``)."""
    base = base_url.rstrip("/")
    return check_offline(html.replace(PLACEHOLDER, base + "/"))


def inline_assets(html: str) -> str:
    """Replace placeholder links by the assets' contents: one self-contained file."""

    def script(match: re.Match[str]) -> str:
        code = asset_path(match[1]).read_text(encoding="utf-8")
        return "<script>" + code.replace("</script", "<\\/script") + "</script>"

    def style(match: re.Match[str]) -> str:
        return "<style>" + inline_css(match[1]) + "</style>"

    return check_offline(_LINK.sub(style, _SCRIPT.sub(script, html)))


def inline_css(name: str) -> str:
    """A stylesheet with the images it refers to as ``data:`` URIs."""
    path = asset_path(name)
    folder = Path(name).parent

    def data_uri(match: re.Match[str]) -> str:
        image = asset_path((folder / match[2]).as_posix())
        mime = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        return f"url(data:{mime};base64,{encoded})"

    return _CSS_URL.sub(data_uri, path.read_text(encoding="utf-8")).replace("</style", "<\\/style")


def check_offline(html: str) -> str:
    """Refuse a page that would fetch a script, stylesheet or image from elsewhere."""
    remote = _REMOTE.search(html)
    if remote:
        raise AssetError(f"the page would load a remote resource: {remote[0]!r}")
    if PLACEHOLDER in html:
        raise AssetError("an asset placeholder was left unresolved")
    return html
