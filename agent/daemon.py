"""``coverwatch-probe run``: wire the outbox, publisher, sensors and scheduler together."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from agent.clock import Clock
from agent.config import ProbeConfig
from agent.outbox import Outbox
from agent.publisher import Publisher, PublisherOptions
from agent.scheduler import Agent, build_sensors
from agent.sensors.base import SensorContext
from agent.systemd import SystemdNotifier

logger = logging.getLogger("coverwatch.agent")


def publisher_options(config: ProbeConfig, boot_id: str) -> PublisherOptions:
    mqtt = config.mqtt
    return PublisherOptions(
        probe_id=config.probe.id,
        url=config.mqtt_url,
        boot_id=boot_id,
        ca_file=Path(mqtt.ca_file) if mqtt.ca_file else None,
        cert_file=Path(mqtt.cert_file) if mqtt.cert_file else None,
        key_file=Path(mqtt.key_file) if mqtt.key_file else None,
        keepalive_s=mqtt.keepalive_s,
        backoff_min_s=mqtt.backoff_min_s,
        backoff_max_s=mqtt.backoff_max_s,
        batch_readings=mqtt.batch_readings,
        max_inflight_messages=mqtt.max_inflight_messages,
        confirm_grace_s=mqtt.confirm_grace_s,
        confirm_timeout_s=mqtt.confirm_timeout_s,
        confirm_timeout_max_s=mqtt.confirm_timeout_max_s,
        max_unconfirmed_readings=mqtt.max_unconfirmed_readings,
        encoding=mqtt.encoding,
    )


def run_daemon(
    config: ProbeConfig,
    stop: threading.Event,
    *,
    clock: Clock | None = None,
    notifier: SystemdNotifier | None = None,
) -> Agent:
    """Measure and publish until ``stop`` is set; a clean stop is recorded as such."""
    clock = clock or Clock()
    notifier = notifier or SystemdNotifier()
    state_dir = Path(config.probe.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(
        config.outbox_path,
        max_readings=config.outbox.max_readings,
        max_age_s=config.outbox.max_age_days * 86_400,
        round_log=config.outbox.round_log,
    )
    publisher = Publisher(publisher_options(config, clock.boot_id), outbox)
    sensors = build_sensors(config.sensors, SensorContext(state_dir=state_dir))
    agent = Agent(
        sensors,
        clock=clock,
        outbox=outbox,
        on_stored=publisher.notify_live,
        notifier=notifier,
        unsent_readings=publisher.unsent_readings,
    )
    stats = outbox.stats()
    logger.info(
        "probe %s starting: broker %s, %d sensors, %d readings waiting in the outbox",
        config.probe.id,
        config.mqtt_url.redacted(),
        len(sensors),
        stats.pending,
    )
    publisher.start()
    clean = False
    try:
        agent.run(stop)
        clean = True
    finally:
        notifier.stopping()
        publisher.stop(reason="stopped" if clean else "agent failed")
        # A crash is not a clean stop: the next start must not take it for one.
        agent.close(clean=clean)
        outbox.close()
        if clean:
            logger.info("probe %s stopped cleanly", config.probe.id)
    return agent
