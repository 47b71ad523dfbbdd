"""Settings of ``python -m svc``, read once from the environment into a frozen object."""

import dataclasses
import datetime
import os
import re
import urllib.parse
from collections.abc import Mapping

import pika

from .errors import ConfigError
from .faults import CRASH_POINTS, LOG_CRASH_POINTS
from .topology import log_arguments
from .topology import DEFAULT_DELIVERY_LIMIT, DEFAULT_EXCHANGE, DEFAULT_LOG_MAX_AGE, DEFAULT_LOG_MAX_BYTES, QUEUE_TYPES

SERVICE_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
EXCHANGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
PREFIX_RE = re.compile(r"(/[A-Za-z0-9_.-]+)+")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_ETCD_ENDPOINTS = "127.0.0.1:2379"
DEFAULT_STATSD_HOST = "127.0.0.1"
DEFAULT_STATSD_PORT = 8125
DEFAULT_ETCD_PREFIX = "/nirvana"
DEFAULT_PREFETCH = 1500       # unacked events held at once: two windows (a third of it each) wait for etcd
                              # round trips before their acks, so the rate is at most 2/3 PREFETCH / (claim
                              # + commit round trips); 100 capped it at a few thousand events/s (bench/)
DEFAULT_CLAIM_TTL = 10          # seconds a claim outlives a consumer that died mid-work
DEFAULT_DEDUP_RETENTION = 86400  # seconds a done mark is kept
DEFAULT_ETCD_TIMEOUT = 2.0      # seconds per etcd call before it counts as unavailable
MAX_PREFETCH = 3000
MAX_DELIVERY_LIMIT = 1000

# How svc reaches an etcd that wants a login or TLS (as etcdctl's --user, --cacert, --cert, --key).
ETCD_ACCESS = ("ETCD_USER", "ETCD_PASSWORD", "ETCD_CACERT", "ETCD_CERT", "ETCD_KEY")
# Every environment variable svc reads.
VARIABLES = ("SERVICE_NAME", "ENABLE_ETCD", "AMQP_URL", "ETCD_ENDPOINTS", "STATSD_HOST", "STATSD_PORT",
             "EVENTS_EXCHANGE", "ETCD_PREFIX", "PREFETCH", "CLAIM_TTL", "DEDUP_RETENTION", "ETCD_TIMEOUT",
             "LOG_LEVEL", "PIKA_LOG_LEVEL", "WORK_MS", "CRASH_AT", "DEDUP_MODE", "OUTBOX_URL",
             "OUTBOX_IDEMPOTENCY", "QUEUE_TYPE", "DELIVERY_LIMIT", "SOURCE", "LOG_OFFSET", "LOG_MAX_AGE",
             "LOG_MAX_BYTES", "LOG_SEGMENT_BYTES", "VIEW_VERSION", *ETCD_ACCESS)
SOURCES = ("queue", "log")   # log: read the events back from the log (svc/replay.py)
LOG_OFFSETS = ("first", "last", "next")
MAX_AGE_RE = re.compile(r"[1-9][0-9]{0,8}[YMDhms]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EtcdAccess:
    """How to reach etcd: a user and password (etcd's auth), TLS with a CA and a client
    certificate. The files are read once, at start; the password and the private key never reach
    a repr or a log. ``tls``: every endpoint speaks TLS (``https://``, or a CA or certificate set).
    ``ca``, ``cert``, ``key``: PEM bytes, or None (no CA: the system's roots; no certificate: none
    sent). The ``*_file`` fields keep the paths, for handing the same settings on."""

    user: str = ""
    password: str = dataclasses.field(default="", repr=False)
    tls: bool = False
    ca: bytes | None = dataclasses.field(default=None, repr=False)
    cert: bytes | None = dataclasses.field(default=None, repr=False)
    key: bytes | None = dataclasses.field(default=None, repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def environment(self) -> dict[str, str]:
        """These settings as svc's variables (ETCD_ACCESS; "" for one not set), for a process
        started with them."""
        return {"ETCD_USER": self.user, "ETCD_PASSWORD": self.password, "ETCD_CACERT": self.ca_file,
                "ETCD_CERT": self.cert_file, "ETCD_KEY": self.key_file}

    @classmethod
    def from_env(cls, env: Mapping[str, str], endpoints: str = "") -> "EtcdAccess":
        """Read ETCD_USER and ETCD_PASSWORD (both or neither), ETCD_CACERT, ETCD_CERT and
        ETCD_KEY (files, read now; a certificate needs its key), and whether ``endpoints``
        (ETCD_ENDPOINTS) say ``https://``. Raises ConfigError naming the first bad variable."""
        get = lambda name: env.get(name, "").strip()  # noqa: E731
        user, password = get("ETCD_USER"), env.get("ETCD_PASSWORD", "")
        if bool(user) != bool(password):
            missing = "ETCD_PASSWORD" if user else "ETCD_USER"
            raise ConfigError(f"{missing} is required with {'ETCD_USER' if user else 'ETCD_PASSWORD'}: set "
                              "both (etcd's user and password, as etcdctl --user user:password) or neither")
        if ":" in user:
            raise ConfigError(f"ETCD_USER={user!r} is invalid: a user name without ':' (the password "
                              "goes in ETCD_PASSWORD)")
        files = {"ETCD_CACERT": get("ETCD_CACERT"), "ETCD_CERT": get("ETCD_CERT"), "ETCD_KEY": get("ETCD_KEY")}
        if bool(files["ETCD_CERT"]) != bool(files["ETCD_KEY"]):
            raise ConfigError("ETCD_CERT and ETCD_KEY go together: the client certificate and its private key "
                              "(as etcdctl --cert and --key)")
        pem = {name: _pem(name, path) for name, path in files.items()}
        schemes = {item.strip().partition("://")[0] for item in endpoints.split(",") if "://" in item}
        if "http" in schemes and ("https" in schemes or any(files.values())):
            raise ConfigError(f"ETCD_ENDPOINTS={endpoints!r} is invalid: http:// with TLS settings (ETCD_CACERT, "
                              "ETCD_CERT) or https://: write https:// or host:port for every endpoint")
        return cls(user=user, password=password, tls="https" in schemes or any(files.values()),
                   ca=pem["ETCD_CACERT"], cert=pem["ETCD_CERT"], key=pem["ETCD_KEY"],
                   ca_file=files["ETCD_CACERT"], cert_file=files["ETCD_CERT"], key_file=files["ETCD_KEY"])


def _pem(name: str, path: str) -> bytes | None:
    """The PEM file ``path`` names (None for ""); ConfigError when it is missing, unreadable or not PEM."""
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"{name}={path!r} cannot be read ({error.strerror or error}): name a PEM file "
                          "svc may read") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{name}={path!r} is not a PEM file (no -----BEGIN line): name the PEM file, "
                          "as etcdctl's --cacert, --cert and --key take")
    return data


DEDUP_MODES = ("claims", "talk")   # talk: the talk's original design, see svc/dedup_talk.py
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Everything a consumer needs, validated once at start."""

    service: str
    enable_etcd: bool = False
    amqp_url: str = DEFAULT_AMQP_URL  # one URL, or several nodes of one cluster: "url1,url2" (amqp_urls)
    etcd_endpoints: tuple[tuple[str, int], ...] = (("127.0.0.1", 2379),)
    statsd_host: str = DEFAULT_STATSD_HOST
    statsd_port: int = DEFAULT_STATSD_PORT
    exchange: str = DEFAULT_EXCHANGE
    etcd_prefix: str = DEFAULT_ETCD_PREFIX
    prefetch: int = DEFAULT_PREFETCH
    claim_ttl: int = DEFAULT_CLAIM_TTL
    dedup_retention: int = DEFAULT_DEDUP_RETENTION
    etcd_timeout: float = DEFAULT_ETCD_TIMEOUT
    log_level: str = "INFO"
    pika_log_level: str = "CRITICAL"  # pika's own logger: quiet unless asked (PIKA_LOG_LEVEL=DEBUG)
    work_ms: int = 0          # simulated work per window (demos and tests of concurrent claims)
    crash_at: str = ""        # one of svc.faults' CRASH_POINTS ("claimed", "sent", "done"; with SOURCE=log its
                              # LOG_CRASH_POINTS "read", "done", "acked"): SIGKILL itself there, once (fault injection)
    dedup_mode: str = "claims"  # with ENABLE_ETCD: "claims" (the kit's) or "talk" (the original design)
    outbox_url: str = ""        # a mail per event handed to this outbox (svc/mail.py), "" for none
    outbox_idempotency: bool = False  # hand the event id on as the mail's idempotency key
    queue_type: str = "classic"       # "quorum": replicated queues with a delivery limit (svc.topology)
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT  # quorum only: returns before the broker dead-letters
    etcd_access: EtcdAccess = EtcdAccess()  # etcd's user and password, TLS (ETCD_USER ... ETCD_KEY)
    source: str = "queue"     # "log": read the log <exchange>.log instead of the service's queue
    log_offset: str = "next"  # log only, without a tracking record: first | last | next | an offset | a time
    log_max_age: str = DEFAULT_LOG_MAX_AGE      # the log's retention when this process declares it
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_segment_bytes: int = 0                  # 0: the broker's default segment (500 MB)
    view_version: int = 0     # log only: the version of the read model built (0: the one in use, else 1)

    @property
    def log_retention(self) -> dict:
        """The log's queue arguments as these settings ask (svc.topology.log_arguments)."""
        return log_arguments(self.log_max_age, self.log_max_bytes, self.log_segment_bytes)

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker URLs in the order svc tries them (``split_urls(amqp_url)``)."""
        return split_urls(self.amqp_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        """Read and check every setting; raise ConfigError naming the first bad variable."""
        env = os.environ if environ is None else environ
        get = lambda name, default: env.get(name, default).strip()  # noqa: E731
        service = get("SERVICE_NAME", "")
        if not service:
            raise ConfigError("SERVICE_NAME is required, e.g. SERVICE_NAME=orders")
        _match("SERVICE_NAME", service, SERVICE_NAME_RE, "[a-z][a-z0-9_-]{0,31}, e.g. orders")
        exchange = _match("EVENTS_EXCHANGE", get("EVENTS_EXCHANGE", DEFAULT_EXCHANGE), EXCHANGE_RE,
                          "letters, digits and _.:- (e.g. events)")
        prefix = _match("ETCD_PREFIX", get("ETCD_PREFIX", DEFAULT_ETCD_PREFIX).rstrip("/") or "/",
                        PREFIX_RE, "an absolute key prefix such as /nirvana")
        log_level = _choice("LOG_LEVEL", get("LOG_LEVEL", "INFO").upper(), LOG_LEVELS)
        pika_log_level = _choice("PIKA_LOG_LEVEL", get("PIKA_LOG_LEVEL", "CRITICAL").upper(), (*LOG_LEVELS, "CRITICAL"))
        crash_at = _choice("CRASH_AT", get("CRASH_AT", "").lower(), ("", *dict.fromkeys(CRASH_POINTS + LOG_CRASH_POINTS)))
        source = _choice("SOURCE", get("SOURCE", "queue").lower(), SOURCES)
        points = {"queue": ("", *CRASH_POINTS), "log": ("", *LOG_CRASH_POINTS)}[source]
        if crash_at not in points:
            raise ConfigError(f"CRASH_AT={crash_at!r} is invalid with SOURCE={source}: use one of "
                              f"{', '.join(p or repr(p) for p in points)}")
        outbox_url = get("OUTBOX_URL", "")
        if outbox_url and not re.fullmatch(r"http://[^/\s]+(/\S*)?", outbox_url):
            raise ConfigError(f"OUTBOX_URL={outbox_url!r} is invalid: expected http://host:port, e.g. http://127.0.0.1:8025")
        etcd_endpoints = get("ETCD_ENDPOINTS", DEFAULT_ETCD_ENDPOINTS)
        return cls(
            service=service,
            enable_etcd=_bool("ENABLE_ETCD", get("ENABLE_ETCD", "false")),
            amqp_url=_amqp_url(get("AMQP_URL", DEFAULT_AMQP_URL)),
            etcd_endpoints=parse_endpoints(etcd_endpoints),
            etcd_access=EtcdAccess.from_env(env, etcd_endpoints),
            statsd_host=get("STATSD_HOST", DEFAULT_STATSD_HOST) or DEFAULT_STATSD_HOST,
            statsd_port=_int("STATSD_PORT", get("STATSD_PORT", str(DEFAULT_STATSD_PORT)), 1, 65535),
            exchange=exchange,
            etcd_prefix=prefix,
            prefetch=_int("PREFETCH", get("PREFETCH", str(DEFAULT_PREFETCH)), 1, MAX_PREFETCH),
            claim_ttl=_int("CLAIM_TTL", get("CLAIM_TTL", str(DEFAULT_CLAIM_TTL)), 1, 3600),
            dedup_retention=_int("DEDUP_RETENTION", get("DEDUP_RETENTION", str(DEFAULT_DEDUP_RETENTION)),
                                 10, 365 * 86400),
            etcd_timeout=_float("ETCD_TIMEOUT", get("ETCD_TIMEOUT", str(DEFAULT_ETCD_TIMEOUT)), 0.1, 60),
            log_level=log_level,
            pika_log_level=pika_log_level,
            work_ms=_int("WORK_MS", get("WORK_MS", "0"), 0, 60000),
            crash_at=crash_at,
            dedup_mode=_choice("DEDUP_MODE", get("DEDUP_MODE", "claims").lower(), DEDUP_MODES),
            outbox_url=outbox_url,
            outbox_idempotency=_bool("OUTBOX_IDEMPOTENCY", get("OUTBOX_IDEMPOTENCY", "false")),
            queue_type=_choice("QUEUE_TYPE", get("QUEUE_TYPE", "classic").lower(), QUEUE_TYPES),
            delivery_limit=_int("DELIVERY_LIMIT", get("DELIVERY_LIMIT", str(DEFAULT_DELIVERY_LIMIT)),
                                1, MAX_DELIVERY_LIMIT),
            source=source,
            log_offset=log_offset(get("LOG_OFFSET", "next")),
            log_max_age=_max_age(get("LOG_MAX_AGE", DEFAULT_LOG_MAX_AGE)),
            log_max_bytes=_int("LOG_MAX_BYTES", get("LOG_MAX_BYTES", str(DEFAULT_LOG_MAX_BYTES)), 0, 2 ** 62),
            log_segment_bytes=_int("LOG_SEGMENT_BYTES", get("LOG_SEGMENT_BYTES", "0"), 0, 2 ** 32),
            view_version=_int("VIEW_VERSION", get("VIEW_VERSION", "0"), 0, 10 ** 9),
        )


def log_offset(text: str) -> str:
    """LOG_OFFSET checked: ``first``, ``last``, ``next``, an offset (a whole number) or a time
    (ISO 8601 with its zone, e.g. ``2026-12-06T05:00:00Z``); the text as given (lower-cased words).
    Raises ConfigError otherwise. The consume argument is ``svc.stream.offset_argument(text)``."""
    if text.lower() in LOG_OFFSETS:
        return text.lower()
    if text.isdigit():
        return text
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ConfigError(f"LOG_OFFSET={text!r} is invalid: use first, last, next, an offset (e.g. 1200) or a "
                          "time with its zone (e.g. 2026-12-06T05:00:00Z)")
    return text


def _max_age(text: str) -> str:
    if text and not MAX_AGE_RE.fullmatch(text):
        raise ConfigError(f"LOG_MAX_AGE={text!r} is invalid: expected a whole number and a unit Y, M, D, h, m or s "
                          "(e.g. 7D), or nothing for no age limit")
    return text


def parse_endpoints(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port[,host:port...]`` (an optional http:// or https:// is dropped: whether TLS is
    spoken is EtcdAccess's) -> ((host, port), ...)."""
    endpoints = []
    for item in text.split(","):
        item = item.strip().removeprefix("http://").removeprefix("https://")
        if "://" in item:
            raise ConfigError(f"ETCD_ENDPOINTS={text!r} is invalid: use host:port, http://host:port or "
                              "https://host:port, e.g. 127.0.0.1:2379")
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"ETCD_ENDPOINTS={text!r} is invalid: use host:port[,host:port...], "
                              "e.g. 127.0.0.1:2379")
        endpoints.append((host, int(port)))
    return tuple(endpoints)


# scheme://, then user:password@ up to the last @ before the path (as urllib splits it); no
# parsing beyond that, so even a URL urllib refuses (a broken IPv6 host) is masked.
_USERINFO_RE = re.compile(r"(?P<head>(?:[^:/?#]+:)?//[^:/?#@]*:)(?P<password>[^/?#]*)@")


# Several URLs are separated by a comma before the next scheme, so a comma inside one URL (a
# password, a query) never splits it.
_URL_SEPARATOR_RE = re.compile(r"\s*,\s*(?=amqps?://)")


def split_urls(text: str) -> tuple[str, ...]:
    """``"amqp://a...,amqp://b..."`` -> ``("amqp://a...", "amqp://b...")`` (one URL -> a 1-tuple)."""
    return tuple(_URL_SEPARATOR_RE.split(text.strip()))


def mask_url(url: str) -> str:
    """The URL (or comma-separated URLs) with every password replaced by ``***``, safe for logs."""
    return ",".join(_USERINFO_RE.sub(lambda m: f"{m['head']}***@", one, count=1) for one in split_urls(url))


def _match(name: str, value: str, pattern: re.Pattern, expected: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(f"{name}={value!r} is invalid: expected {expected}")
    return value


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is invalid: use one of {', '.join(c or repr(c) for c in choices)}")
    return value


def _bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"", "0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={value!r} is invalid: use true or false")


def _int(name: str, value: str, low: int, high: int) -> int:
    return _number(name, value, int, low, high, "a whole number")


def _float(name: str, value: str, low: float, high: float) -> float:
    return _number(name, value, float, low, high, "a number")


def _number(name, value, cast, low, high, what):
    try:
        number = cast(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ConfigError(f"{name}={value!r} is invalid: expected {what} from {low} to {high}")
    return number


def _amqp_url(text: str) -> str:
    """One URL or several (nodes of one cluster), each checked; the text as given."""
    for value in split_urls(text):
        _one_amqp_url(value)
    return text


def _one_amqp_url(value: str) -> str:
    expected = "expected amqp://user:password@host:port/vhost[,amqp://...] (several: nodes of one cluster)"
    if not value.startswith(("amqp://", "amqps://")):
        raise ConfigError(f"AMQP_URL={mask_url(value)!r} is invalid: {expected}")
    try:
        # pika's own parser, so a URL accepted here is one the consumer can use (port, query).
        parameters = pika.URLParameters(value)
    except ValueError as error:
        match = _USERINFO_RE.search(value)
        reason = str(error).replace(match["password"], "***") if match and match["password"] else str(error)
        raise ConfigError(f"AMQP_URL={mask_url(value)!r} is invalid ({reason}): {expected}") from None
    parts = urllib.parse.urlsplit(value)
    if not parts.hostname or "," in parts.netloc.rpartition("@")[2] + parts.path or not 0 < parameters.port < 65536:
        raise ConfigError(f"AMQP_URL={mask_url(value)!r} is invalid: {expected}")
    return value
