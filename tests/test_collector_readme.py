"""collector/README.md documents every collector setting (Datasette-style docs test)."""

from __future__ import annotations

import re

from collector.config import SETTINGS
from tests.helpers import REPO

README = (REPO / "collector" / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = {
        match["name"]: (match["flag"], match["env"])
        for match in re.finditer(
            r"^\| `(?P<name>[a-z_]+)` \| `(?P<flag>--[a-z-]+)` \| `(?P<env>[A-Z_]+)` \|",
            README,
            re.MULTILINE,
        )
    }
    for setting in SETTINGS:
        assert rows.get(setting.name) == (setting.flag, setting.env), (
            f"add `{setting.name}` to the configuration table of collector/README.md"
        )
    assert set(rows) == {setting.name for setting in SETTINGS}
