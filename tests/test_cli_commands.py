"""``coverwatch``'s commands come from the components (entry points), not from a list in
the shared package; a component whose libraries are missing says what to install."""

from __future__ import annotations

import argparse
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from coverwatch import cli
from tests.helpers import REPO


def declared_in_pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    table: dict[str, str] = project["entry-points"][cli.COMMANDS_GROUP]
    return table


def test_the_installed_commands_are_the_ones_pyproject_declares() -> None:
    installed = {
        point.name: point.value for points in cli.component_commands().values() for point in points
    }
    # Differs after pyproject.toml changed and the package was not installed again:
    # `make venv` (or pip install -e .) does that.
    assert installed == declared_in_pyproject()


def test_each_component_registers_exactly_the_commands_it_declares() -> None:
    for (module, attr), points in cli.component_commands().items():
        commands = argparse.ArgumentParser().add_subparsers()
        points[0].load()(commands)
        registered = set(commands.choices)
        declared = {point.name for point in points}
        assert registered == declared, (
            f"{module}:{attr} adds {sorted(registered)}; pyproject.toml's "
            f'[project.entry-points."{cli.COMMANDS_GROUP}"] names {sorted(declared)}'
        )
    top = cli.build_parser()._subparsers
    assert top is not None
    (choices,) = (action.choices for action in top._group_actions)
    assert isinstance(choices, dict)
    assert set(choices) == {"protocol", *declared_in_pyproject()}


@pytest.fixture
def fake_components(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three components: one that works, one whose library is missing, one not installed."""
    (tmp_path / "cw_fake_working.py").write_text(
        "def register(commands):\n"
        "    parser = commands.add_parser('fake-run', help='works')\n"
        "    parser.add_argument('--level', type=int, default=1)\n"
        "    parser.set_defaults(handler=lambda args: 40 + args.level)\n"
    )
    (tmp_path / "cw_fake_heavy.py").write_text(
        "import cw_library_not_installed  # noqa\n\ndef register(commands):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        EntryPoint("fake-run", "cw_fake_working:register [server]", cli.COMMANDS_GROUP),
        EntryPoint("fake-map", "cw_fake_heavy:register [server]", cli.COMMANDS_GROUP),
        EntryPoint("fake-demo", "cw_fake_heavy:register [server,embedded]", cli.COMMANDS_GROUP),
        EntryPoint("fake-gone", "cw_fake_absent.cli:register [server]", cli.COMMANDS_GROUP),
    ]

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [point for point in points if point.group == group]

    monkeypatch.setattr(cli, "entry_points", entry_points)


@pytest.mark.usefixtures("fake_components")
def test_a_working_component_runs_its_own_command() -> None:
    assert cli.main(["fake-run", "--level", "2"]) == 42


@pytest.mark.usefixtures("fake_components")
@pytest.mark.parametrize(
    "argv",
    [
        ["fake-map"],
        ["fake-map", "villages", "import", "--database-url", "postgresql://x/y"],
        ["fake-map", "--help"],
    ],
)
def test_a_command_whose_library_is_missing_says_what_to_install(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: this command needs the server extra (cw_library_not_installed is not "
        "installed): pip install '.[server]'\n"
    )


@pytest.mark.usefixtures("fake_components")
def test_the_extras_named_are_the_entry_points_own(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fake-demo", "--now", "2026-11-30T13:00:00Z"]) == 2
    assert capsys.readouterr().err == (
        "error: this command needs the server and embedded extras (cw_library_not_installed "
        "is not installed): pip install '.[server,embedded]'\n"
    )


@pytest.mark.usefixtures("fake_components")
def test_the_help_lists_missing_commands_and_leaves_out_absent_components(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "fake-run works" in help_text
    assert "fake-map (needs: pip install '.[server]'; cw_library_not_installed missing)" in (
        help_text
    )
    assert "fake-gone" not in help_text
