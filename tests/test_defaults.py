"""Every default is declared once: the settings tables and the components they configure
agree, because one refers to the other (a second copy could drift)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

from agent import config as probe_config
from agent.daemon import publisher_options
from agent.outbox import Outbox
from agent.publisher import PublisherOptions
from collector import config as collector_config
from collector.ingest import IngestOptions

# IngestOptions field -> the collector setting it comes from.
INGEST_SETTINGS = {
    "client_id": "client_id",
    "shared_group": "shared_group",
    "batch_readings": "batch_readings",
    "batch_age_s": "batch_age_s",
    "max_unacked_messages": "max_unacked_messages",
    "ca_file": "mqtt_ca_file",
}


def test_ingest_options_default_to_the_collector_settings() -> None:
    args = argparse.Namespace(
        config=None,
        database_url="postgresql://db/cw",
        mqtt_url="mqtt://broker",
        **{
            name: None
            for name in collector_config.DEFAULTS
            if name not in ("database_url", "mqtt_url")
        },
    )
    resolved = collector_config.resolve(args, environ={})
    options = IngestOptions()
    for field, setting in INGEST_SETTINGS.items():
        assert getattr(options, field) == resolved[setting] == collector_config.DEFAULTS[setting]


def minimal_probe_config() -> probe_config.ProbeConfig:
    return probe_config.from_mapping(
        {"probe": {"id": "cb-001"}, "mqtt": {"url": "mqtt://broker"}}, environ={}
    )


def test_a_probe_toml_without_mqtt_options_runs_the_publisher_with_its_defaults() -> None:
    config = minimal_probe_config()
    boot_id = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
    assert publisher_options(config, boot_id) == PublisherOptions(
        probe_id="cb-001", url=config.mqtt_url, boot_id=boot_id
    )
    shared = {f.name for f in dataclasses.fields(PublisherOptions)} & {
        f.name for f in dataclasses.fields(probe_config.MqttSection)
    }
    assert {"keepalive_s", "backoff_min_s", "backoff_max_s", "batch_readings"} <= shared


def test_a_probe_toml_without_outbox_options_bounds_the_outbox_as_its_defaults() -> None:
    section = minimal_probe_config().outbox
    defaults = inspect.signature(Outbox).parameters
    assert section.max_readings == defaults["max_readings"].default
    assert section.max_age_days * 86_400 == defaults["max_age_s"].default
