"""The hand-publishing examples of docs/protocol.md, run with the real mosquitto_pub.

A technician copies these from the docs; they must be accepted by the protocol
module exactly as they arrive from the broker.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from coverwatch import protocol
from coverwatch.localservices.broker import LocalBroker
from tests.conftest import skip_unless_ci
from tests.helpers import argument_after, doc_mosquitto_pub_commands, subscribed

EXAMPLES = doc_mosquitto_pub_commands()


def test_docs_have_readings_and_status_examples() -> None:
    topics = [argument_after(argv, "-t") for argv in EXAMPLES]
    assert "coverwatch/v1/cb-001/readings" in topics
    assert "coverwatch/v1/cb-001/status" in topics


@pytest.mark.parametrize("argv", EXAMPLES, ids=lambda argv: argument_after(argv, "-t"))
def test_documented_example_publishes_and_decodes(broker: LocalBroker, argv: list[str]) -> None:
    mosquitto_pub = shutil.which("mosquitto_pub")
    if mosquitto_pub is None:
        skip_unless_ci("mosquitto_pub is not installed (Debian: apt-get install mosquitto-clients)")
    url = broker.url
    command = [mosquitto_pub, *argv[1:]]
    command[command.index("-h") + 1] = url.host
    command[command.index("-p") + 1] = str(url.port)
    if url.username:
        command += ["-u", url.username, "-P", url.password or ""]
    topic = argument_after(argv, "-t")
    with subscribed(url, topic) as inbox:
        subprocess.run(command, check=True, timeout=30, capture_output=True)
        message = inbox.wait_for(1, topic=topic)[-1]
    if topic.endswith("/status"):
        status = protocol.decode_status(message.topic, message.payload)
        assert (status.probe_id, status.state) == ("cb-001", "online")
        # -r: the status stays for whoever subscribes later.
        with subscribed(url, topic) as later:
            assert later.wait_for(1, topic=topic)[0].retain
        # Clear the retained status so other tests on this broker start clean.
        clear = list(command)
        position = clear.index("-m")
        clear[position : position + 2] = ["-n"]  # empty retained payload deletes it
        subprocess.run(clear, check=True, timeout=30, capture_output=True)
        return
    decoded = protocol.decode_readings(message.topic, message.payload)
    assert decoded.rejected == ()
    kinds = [type(r).__struct_config__.tag for r in decoded.batch.readings]
    assert kinds == ["signal", "signal", "latency", "power"]
    assert [r.seq for r in decoded.batch.readings] == [1041, 1042, 1043, 1044]
