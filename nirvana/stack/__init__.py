"""The stack: RabbitMQ, etcd, statsd, carbon and graphite-web as plain local processes.

``up`` starts each component that is not answering yet, from the machine's packages (see
``./kit setup``) with the configs of ``assets/``; its data, pid file and log live under the state
folder (:func:`nirvana.paths.state_dir`). A component that already answers (RabbitMQ on a CI
machine, a docker-compose stack) is used and never restarted or stopped. ``status`` tells what
answers, ``reset`` returns the demo to a clean start, ``down`` stops what the kit started.

One module per component (its probe, its launcher, what it needs): :mod:`.rabbitmq`,
:mod:`.etcd`, :mod:`.statsd`, :mod:`.carbon`, :mod:`.graphite`; :mod:`.jupyterlab` for
``./kit present``; :mod:`.lifecycle` for up/status/down; :mod:`.reset`; :mod:`.running` for the
processes the kit started (started, awaited and stopped by :mod:`nirvana.launcher`).

Every call has a deadline and every error is one line saying what to do.
"""

from ..errors import SettingError, StackError
from .carbon import whisper_dir
from .component import Component, Launch, Probe
from .jupyterlab import LAB, LAB_PORT, lab, lab_url
from .lifecycle import BY_NAME, COMPONENTS, Row, down, render_status, status, up
from .ports import port_holder
from .rabbitmq import Node as RabbitNode
from .rabbitmq import node as rabbitmq_node
from .reset import count_etcd_prefix, delete_etcd_prefix, etcd_client, etcd_prefix, kit_queues, reset, whisper_files
from .running import kit_process, log_file

__all__ = [
    # errors
    "StackError", "SettingError",
    # the lifecycle
    "up", "status", "down", "render_status", "Row", "COMPONENTS", "BY_NAME", "Component", "Probe", "Launch",
    # reset and what it touches
    "reset", "etcd_prefix", "kit_queues", "etcd_client", "delete_etcd_prefix", "count_etcd_prefix",
    "whisper_dir", "whisper_files",
    # JupyterLab (./kit present)
    "lab", "lab_url", "LAB", "LAB_PORT",
    # the processes the kit started
    "kit_process", "log_file", "port_holder",
    # the RabbitMQ node on the kit's AMQP port, as rabbitmqctl addresses it
    "rabbitmq_node", "RabbitNode",
]
