"""Hostile TOML for both config loaders (hypothesis): probe.toml and the collector's file.

Whatever the file holds — bytes that are not UTF-8, tables and arrays nested thousands
deep, 5,000-digit numbers, inf and nan, NUL characters, dates where numbers belong, every
declared option with a value of every wrong type — loading ends in the project's config
error (:class:`agent.config.ProbeConfigError`, :class:`coverwatch.errors.ConfigError`):
one line per problem, short, naming the option, with what to do. Never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config as probe_config
from agent.sensors.base import registered
from collector import config as collector_config
from coverwatch.errors import ConfigError
from tests.helpers import REPO

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SAMPLE = (REPO / "agent" / "probe.sample.toml").read_bytes()
MINIMAL = '[probe]\nid = "cb-001"\n\n[mqtt]\nurl = "mqtt://cb-001:pw@127.0.0.1:1883"\n'


def nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    return "{a = " * depth + "1" + "}" * depth


# TOML values a file may hold where a setting belongs; most are wrong somewhere.
TOML_VALUES = st.one_of(
    st.sampled_from(
        [
            "1" + "0" * 5000,  # beyond Python's int-to-text limit
            "1" + "0" * 400,  # beyond a float
            "99999999999999999999",  # beyond 64 bits
            "-9223372036854775809",
            "0",
            "-1",
            "inf",
            "-inf",
            "nan",
            "1e400",
            "0.2",
            '"a\\u0000b"',
            '"\\u0000"',
            '"Đi\u00ean Bi\u00ean"',
            '"\u202ecb-001"',
            '"' + "x" * 5000 + '"',
            '""',
            "true",
            "1979-05-27T07:32:00Z",
            "1979-05-27",
            "07:32:00",
            "[]",
            '[1, "a", [2]]',
            "{}",
            '{url = "mqtt://h"}',
        ]
    ),
    st.builds(nested, st.sampled_from([5, 300, 2000]), st.sampled_from(["array", "table"])),
    st.integers().map(str),
    st.floats().map(lambda f: "nan" if math.isnan(f) else repr(f)),
    st.text(max_size=30).map(lambda text: '"' + text.encode("unicode_escape").decode() + '"'),
)
AGENT_TABLES = [
    "probe",
    "mqtt",
    "outbox",
    *(f"sensors.{name}" for name in registered()),
    "sensors",
    "sensors.nope",
    "extra",
    '"a\\nb"',
    ".".join(["deep"] * 300),
]
AGENT_KEYS = sorted(
    {
        *(
            f.name
            for t in (probe_config.ProbeSection, probe_config.MqttSection)
            for f in dataclasses.fields(t)
        ),
        *(f.name for f in dataclasses.fields(probe_config.OutboxSection)),
        *(f.name for p in registered().values() for f in dataclasses.fields(p.settings_type)),
        "enabled",
        "interval_s",
        "x" * 300,
        '"\\u0000"',
        '"a b"',
    }
)


@st.composite
def toml_documents(draw: st.DrawFn, tables: list[str], keys: list[str]) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        parts.append(f"[{draw(st.sampled_from(tables))}]")
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            parts.append(f"{key} = {draw(TOML_VALUES)}")
    return "\n".join(parts) + "\n"


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(buffer)))
        insert = draw(
            st.sampled_from([b"\x00", b"\xff", b"\xd0", b"[[[[", b"=", b'"', b"\n[", b"\\u"])
            | st.binary(max_size=8)
        )
        if draw(st.booleans()):
            buffer[position:position] = insert
        else:
            del buffer[position:]
    return bytes(buffer)


def uncommented(sample: bytes) -> bytes:
    lines = [
        line[2:] if line.startswith(b"# ") and b" = " in line else line
        for line in sample.splitlines()
    ]
    return b"\n".join(lines)


def assert_problems_are_lines(problems: list[str]) -> None:
    assert problems
    for problem in problems:
        assert problem.strip()
        assert "\n" not in problem, problem
        assert len(problem) < 500, problem[:300]
        assert "Traceback" not in problem


# ---------------------------------------------------------------------- probe.toml


def load_agent(data: bytes) -> probe_config.ProbeConfig | probe_config.ProbeConfigError:
    """``load`` as the agent runs it, on a file holding ``data``."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "probe.toml"
        path.write_bytes(data)
        try:
            config = probe_config.load(path, environ={})
            config.outbox_path  # noqa: B018 - derived settings must not raise either
            config.mqtt_url  # noqa: B018
        except probe_config.ProbeConfigError as error:
            return error
    return config


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=500),
        mutated_bytes(MINIMAL.encode()),
        mutated_bytes(uncommented(SAMPLE)),
        toml_documents(AGENT_TABLES, AGENT_KEYS).map(lambda text: (MINIMAL + text).encode()),
        toml_documents(AGENT_TABLES, AGENT_KEYS).map(str.encode),
    )
)
def test_probe_toml_loads_or_lists_its_problems(data: bytes) -> None:
    outcome = load_agent(data)
    if isinstance(outcome, probe_config.ProbeConfigError):
        assert_problems_are_lines(outcome.problems)
        assert str(outcome).endswith("\n".join(f"  - {problem}" for problem in outcome.problems))


def agent_options() -> list[tuple[str, str, Any]]:
    options = []
    for table, section in (
        ("probe", probe_config.ProbeSection),
        ("mqtt", probe_config.MqttSection),
        ("outbox", probe_config.OutboxSection),
    ):
        options += [(table, f.name, f.type) for f in dataclasses.fields(section)]
    for name, plugin in registered().items():
        options += [(f"sensors.{name}", key, None) for key in ("enabled", "interval_s")]
        options += [
            (f"sensors.{name}", f.name, f.type) for f in dataclasses.fields(plugin.settings_type)
        ]
    return options


WRONG_VALUES = [
    "1" + "0" * 5000,
    "1" + "0" * 30,
    "nan",
    "inf",
    "[[1]]",
    "{a = 1}",
    "1979-05-27",
    '"a\\u0000"',
]


def probe_toml(table: str, key: str, value: str) -> bytes:
    tables: dict[str, dict[str, str]] = {
        "probe": {"id": '"cb-001"'},
        "mqtt": {"url": '"mqtt://cb-001:pw@127.0.0.1:1883"'},
    }
    tables.setdefault(table, {})[key] = value
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
        for name, options in tables.items()
    ).encode()


@pytest.mark.parametrize(("table", "key", "kind"), agent_options())
@pytest.mark.parametrize("value", WRONG_VALUES)
def test_every_probe_option_refuses_every_wrong_value_by_name(
    table: str, key: str, kind: Any, value: str
) -> None:
    outcome = load_agent(probe_toml(table, key, value))
    if value.startswith("1" + "0" * 4000):  # tomllib refuses the file before any key
        assert isinstance(outcome, probe_config.ProbeConfigError)
        assert "a number has thousands of digits" in str(outcome)
        return
    if isinstance(outcome, probe_config.ProbeConfig):
        # Only a big number where a float belongs is a right value here.
        assert kind in (float, "float"), (table, key, value)
        assert value == "1" + "0" * 30, (table, key, value)
        return
    assert_problems_are_lines(outcome.problems)
    assert any(f"[{table}]" in problem and key in problem for problem in outcome.problems), (
        outcome.problems
    )


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (MINIMAL.encode() + b"# caf\xe9\n", "byte 0xe9 on line 6 is not UTF-8"),
        (MINIMAL.encode("utf-16"), "UTF-16"),
        (MINIMAL.encode() + b"x = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (MINIMAL.encode() + b"[outbox]\nmax_readings = 1" + b"0" * 5000, "thousands of digits"),
        (MINIMAL.encode() + b"[outbox]\nmax_age_days = 1" + b"0" * 400, "max_age_days"),
        (MINIMAL.encode() + b"[outbox]\npath = 1" + b"0" * 30, "got a number of about 31 digits"),
        (
            MINIMAL.replace("[mqtt]\n", '[mqtt]\nca_file = "a\\u0000"\n').encode(),
            "[mqtt] ca_file: contains a NUL",
        ),
        (MINIMAL.encode().replace(b'"cb-001"', b'"cb-001\\n"', 1), "is not a valid probe id"),
        (MINIMAL.encode() + b"\x00", "not valid TOML"),
        (MINIMAL.encode() + b"[sensors.latency]\ninterval_s = 1" + b"0" * 30, "at most 2678400"),
    ],
)
def test_hostile_probe_toml_names_the_problem(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "probe.toml"
    path.write_bytes(data)
    with pytest.raises(probe_config.ProbeConfigError) as caught:
        probe_config.load(path, environ={})
    assert words in str(caught.value)
    assert_problems_are_lines(caught.value.problems)


def test_a_password_file_that_is_not_text_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_bytes(b"\xff\xfe\x00s3cret")
    path = tmp_path / "probe.toml"
    path.write_text(MINIMAL.replace("cb-001:pw@", "cb-001@") + f'password_file = "{secret}"\n')
    with pytest.raises(probe_config.ProbeConfigError, match=r"password_file: .* is not UTF-8"):
        probe_config.load(path, environ={})


# ---------------------------------------------------------------- collector TOML

COLLECTOR_KEYS = [setting.name for setting in collector_config.SETTINGS] + ["nope", '"\\u0000"']
REQUIRED_ENV = {
    "COVERWATCH_DATABASE_URL": "postgresql://db/cw",
    "COVERWATCH_MQTT_URL": "mqtt://broker",
}


def resolve_collector(path: Path | None, environ: dict[str, str]) -> dict[str, Any] | ConfigError:
    args = argparse.Namespace(
        config=path, **{setting.name: None for setting in collector_config.SETTINGS}
    )
    try:
        return collector_config.resolve(args, environ=environ)
    except ConfigError as error:
        return error


def assert_config_error(error: ConfigError) -> None:
    assert str(error) == f"{error.setting}: {error.problem}\nHint: {error.hint}"
    for part in (error.setting, error.problem, error.hint):
        assert part.strip()
        assert "\n" not in part, part
    assert len(str(error)) < 800


def check_values(values: dict[str, Any]) -> None:
    for setting in collector_config.SETTINGS:
        value = values[setting.name]
        if value is None:
            continue
        assert type(value) is setting.type, (setting.name, value)
        if isinstance(value, float):
            assert math.isfinite(value)
        if isinstance(value, int | float):
            maximum = getattr(setting, "maximum", None)  # declared since the fuzzing
            assert 0 <= value <= (maximum if maximum is not None else 2**63)
        if isinstance(value, str):
            assert "\x00" not in value


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=500),
        toml_documents(["collector", "collector.x", "other"], COLLECTOR_KEYS).map(str.encode),
        mutated_bytes(b'[collector]\nbatch_readings = 10\nlog_format = "json"\n'),
    )
)
def test_collector_toml_loads_or_says_what_to_fix(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "collector.toml"
        path.write_bytes(data)
        outcome = resolve_collector(path, REQUIRED_ENV)
    if isinstance(outcome, ConfigError):
        assert_config_error(outcome)
    else:
        check_values(outcome)


@FUZZ
@given(
    st.sampled_from(collector_config.SETTINGS),
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            ["1" * 5000, "1e400", "inf", "nan", "-1", "99999", " 5 ", "0x10", "\uff11\uff12"]
        ),
    ),
)
def test_collector_environment_values_are_checked(
    setting: collector_config.Setting, text: str
) -> None:
    text = text.replace("\x00", "")  # an environment cannot hold NUL
    outcome = resolve_collector(None, {**REQUIRED_ENV, setting.env: text})
    if isinstance(outcome, ConfigError):
        assert_config_error(outcome)
        assert outcome.setting in (setting.env, setting.flag)  # required ones: the flag
    else:
        check_values(outcome)


@pytest.mark.parametrize("setting", collector_config.SETTINGS, ids=lambda s: s.name)
@pytest.mark.parametrize("value", [*WRONG_VALUES, "true", "[1, 2]", "-5", "1e400", "99999999"])
def test_every_collector_option_refuses_every_wrong_value_by_name(
    tmp_path: Path, setting: collector_config.Setting, value: str
) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(f"[collector]\n{setting.name} = {value}\n")
    outcome = resolve_collector(path, REQUIRED_ENV)
    if isinstance(outcome, dict):  # a right value after all (e.g. 99999999 seconds is not)
        check_values(outcome)
        return
    assert_config_error(outcome)
    if "thousands of digits" not in outcome.problem:
        assert outcome.setting == f"{path}: [collector] {setting.name}", outcome


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'[collector]\nclient_id = "caf\xe9"\n', "is not UTF-8 text (byte 0xe9 on line 2)"),
        (b"[collector]\nx = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"[collector]\nmetrics_port = inf\n", "metrics_port: expected int, got inf"),
        (b"[collector]\nmetrics_port = 99999\n", "must be at most 65535"),
        (b"[collector]\nmetrics_port = 9108.5\n", "expected int, got 9108.5"),
        (b"[collector]\nbatch_age_s = nan\n", "expected float (a finite number), got nan"),
        (b"[collector]\nbatch_age_s = 1" + b"0" * 400, "got a number of about 401 digits"),
        (b"[collector]\nbatch_readings = 1" + b"0" * 5000, "a number has thousands of digits"),
        (b"[collector]\nclient_id = [1, 2]\n", "client_id: expected str, got [1, 2]"),
        (b'[collector]\nclient_id = "a\\u0000"\n', "contains a NUL character"),
        (b"[collector]\nbatch_age_s = 1979-05-27\n", "got a date/time (1979-05-27)"),
    ],
)
def test_hostile_collector_toml_names_the_problem(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "collector.toml"
    path.write_bytes(data)
    outcome = resolve_collector(path, REQUIRED_ENV)
    assert isinstance(outcome, ConfigError)
    assert_config_error(outcome)
    assert words in str(outcome)
