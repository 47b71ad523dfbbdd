"""A user whom the machine's rabbitmqctl refuses (a normal user beside the system's RabbitMQ:
"Only root or rabbitmq should run rabbitmqctl"): ``./kit up`` and ``./kit status`` say so up front,
with what the kit does instead, instead of claiming rabbitmqctl addresses the broker."""

import os
import subprocess
import sys

from nirvana import paths
from nirvana.stack.rabbitmq import Node

REFUSING = "#!/bin/sh\necho 'Only root or rabbitmq should run rabbitmqctl' >&2\nexit 1\n"


def shim_path(tmp_path, body: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "rabbitmqctl").write_text(body)
    (folder / "rabbitmqctl").chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_a_refusing_rabbitmqctl_is_named_with_what_the_kit_does_instead(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", shim_path(tmp_path, REFUSING))
    found = Node(None, False)
    assert found.refused() == "Only root or rabbitmq should run rabbitmqctl"
    assert "closed at the TCP level instead" in found.describe()
    assert Node(None, False, None).limits().startswith("rabbitmq: found running, and its rabbitmqctl refuses this user")


def test_a_permitted_rabbitmqctl_is_no_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", shim_path(tmp_path, "#!/bin/sh\necho /\n"))
    assert Node(None, False).refused() is None
    assert Node(None, False).limits() is None


def test_up_and_status_say_up_front_what_will_not_work(amqp_url, tmp_path):
    # Given a RabbitMQ running that the kit did not start (the state folder names no node of the
    # kit's) and a user its rabbitmqctl refuses
    env = {**os.environ, "PATH": shim_path(tmp_path, REFUSING), "NIRVANA_STATE": str(tmp_path / "state")}
    for command in ("up", "status"):
        run = subprocess.run([sys.executable, "-m", "nirvana", command, "rabbitmq"], cwd=paths.ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        # I expect the refusal and what the kit does instead, not "rabbitmqctl addresses it"
        assert "rabbitmqctl refuses this user (Only root or rabbitmq should run rabbitmqctl)" in run.stdout, run.stdout
        assert "rabbitmqctl addresses it" not in run.stdout
