"""The settings of reading the log: checked once at start, one line and exit status 2 when bad."""

import subprocess
import sys

import pytest

from svc.config import Config
from svc.errors import ConfigError
from svc.stream import offset_argument


@pytest.mark.parametrize("text, argument", [("first", "first"), ("LAST", "last"), ("next", "next"), ("1200", 1200)])
def test_a_log_offset_is_a_word_or_a_number(text, argument):
    assert offset_argument(Config.from_env({"SERVICE_NAME": "billing", "LOG_OFFSET": text}).log_offset) == argument


def test_a_log_offset_may_be_a_time_with_its_zone():
    when = offset_argument(Config.from_env({"SERVICE_NAME": "billing", "LOG_OFFSET": "2026-12-06T05:00:00Z"}).log_offset)
    assert when.isoformat() == "2026-12-06T05:00:00+00:00"


@pytest.mark.parametrize("variable, value, message", [
    ("LOG_OFFSET", "yesterday", "LOG_OFFSET='yesterday' is invalid: use first, last, next, an offset"),
    ("LOG_OFFSET", "2026-12-06T05:00:00", "LOG_OFFSET='2026-12-06T05:00:00' is invalid"),   # no zone: whose 5 o'clock?
    ("LOG_OFFSET", "-3", "LOG_OFFSET='-3' is invalid"),
    ("LOG_MAX_AGE", "7 days", "LOG_MAX_AGE='7 days' is invalid: expected a whole number and a unit"),
    ("LOG_MAX_BYTES", "-1", "LOG_MAX_BYTES='-1' is invalid"),
    ("SOURCE", "stream", "SOURCE='stream' is invalid: use one of queue, log"),
    ("VIEW_VERSION", "v2", "VIEW_VERSION='v2' is invalid"),
    ("CRASH_AT", "read", "CRASH_AT='read' is invalid with SOURCE=queue"),
])
def test_a_bad_setting_is_named_in_one_line(variable, value, message):
    with pytest.raises(ConfigError, match=f"^{message}".replace("(", r"\(").replace("?", r"\?")):
        Config.from_env({"SERVICE_NAME": "billing", variable: value})


def test_crash_points_of_the_log_are_refused_for_a_queue_and_the_reverse():
    Config.from_env({"SERVICE_NAME": "billing", "SOURCE": "log", "CRASH_AT": "acked"})
    with pytest.raises(ConfigError, match="^CRASH_AT='claimed' is invalid with SOURCE=log"):
        Config.from_env({"SERVICE_NAME": "billing", "SOURCE": "log", "CRASH_AT": "claimed"})


def test_svc_exits_2_on_a_bad_log_setting():
    # Given svc started with a time that has no zone
    done = subprocess.run([sys.executable, "-m", "svc"], capture_output=True, text=True, timeout=30,
                          env={"SERVICE_NAME": "billing", "SOURCE": "log", "LOG_OFFSET": "noon", "PATH": ""})
    # I expect one line and exit status 2
    assert done.returncode == 2
    assert done.stderr.startswith("svc: LOG_OFFSET='noon' is invalid") and done.stderr.count("\n") == 1
