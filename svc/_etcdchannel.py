"""One etcd endpoint's gRPC channel: TLS, etcd's login and its token, and what a failure means.

The channel speaks TLS when svc.config.EtcdAccess says so (a CA, a client certificate). With a
user, the login is etcd's own (its gRPC ``Auth.Authenticate``, as etcdctl --user does): the name
and password buy a token, sent as the ``token`` metadata of every call; a token etcd no longer
knows (a simple token expires after ``--auth-token-ttl``, 300 s without use, or after a restart)
or issued before a change of users and roles is bought again by the caller (svc.etcd.Etcd), and
the call sent again, once. gRPC is imported on first use: ``import svc`` stays light.
"""

import collections
import functools
import logging
import threading

from . import _etcdrpc

log = logging.getLogger("svc.etcd")

_rpc_module = None


def _rpc():
    """etcd3's protobuf and gRPC module (imported on first use: `import svc` stays light)."""
    global _rpc_module
    if _rpc_module is None:
        _etcdrpc.install()   # etcd3's own protobuf modules break under protobuf 4+: svc/_etcdrpc's
        import etcd3
        import etcd3.etcdrpc
        _rpc_module = etcd3.etcdrpc
    return _rpc_module


GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]  # pages of long ids


def _client(host: str, port: int, timeout: float):
    """etcd3's own client for ``host:port`` (plain, no login): for scripts and tests that want its
    conveniences; svc's calls go through :class:`_Client`."""
    _rpc()
    import etcd3
    return etcd3.client(host=host, port=port, timeout=timeout, grpc_options=GRPC_OPTIONS)


@functools.cache
def _token_metadata() -> type:
    """The class of the interceptor that adds a client's current token as the ``token`` metadata
    of every call (etcd's v3 auth: a plain-text channel cannot carry gRPC call credentials,
    metadata it can). Made on first use: ``import svc`` does not import gRPC."""
    import grpc

    class CallDetails(collections.namedtuple("CallDetails", ("method", "timeout", "metadata", "credentials",
                                                             "wait_for_ready", "compression")),
                      grpc.ClientCallDetails):
        pass

    class TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def __init__(self, client: "_Client") -> None:
            self._client = client

        def _details(self, details):
            token = self._client.token
            if not token:
                return details
            return CallDetails(details.method, details.timeout, [*(details.metadata or ()), ("token", token)],
                               details.credentials, getattr(details, "wait_for_ready", None),
                               getattr(details, "compression", None))

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._details(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._details(details), request)

        def intercept_stream_unary(self, continuation, details, requests):
            return continuation(self._details(details), requests)

        def intercept_stream_stream(self, continuation, details, requests):
            return continuation(self._details(details), requests)

    return TokenMetadata


class _Client:
    """One endpoint's gRPC channel (TLS when ``access.tls``) and etcd's stubs on it, with the
    token of ``access.user`` (bought by ``login``, at the first call)."""

    def __init__(self, host: str, port: int, access=None) -> None:
        rpc = _rpc()
        import grpc
        self.target, self.access = f"{host}:{port}", access
        if access is not None and access.tls:
            credentials = grpc.ssl_channel_credentials(access.ca, access.key, access.cert)
            self._channel = grpc.secure_channel(self.target, credentials, options=GRPC_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(self.target, options=GRPC_OPTIONS)
        self.token, self._logged_in = "", not (access is not None and access.user)
        self._login_lock = threading.Lock()
        self.channel = self._channel if self._logged_in else grpc.intercept_channel(self._channel, _token_metadata()(self))
        self.kvstub, self.leasestub = rpc.KVStub(self.channel), rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)

    def login(self, timeout: float) -> None:
        """Buy a token with the user's name and password, unless one is held (raises grpc.RpcError).
        An etcd with authentication off answers "authentication is not enabled": no token is
        needed then (as etcd's own clients do)."""
        if self._logged_in:
            return
        with self._login_lock:
            if self._logged_in:
                return
            request = _rpc().AuthenticateRequest(name=self.access.user, password=self.access.password)
            try:
                self.token = _rpc().AuthStub(self._channel).Authenticate(request, timeout).token
            except Exception as error:  # grpc.RpcError
                if "authentication is not enabled" not in _describe(error):
                    raise
                self.token = ""
            self._logged_in = True

    def stale(self, error: Exception) -> bool:
        """True if ``error`` says our token is no longer good (expired, or issued before etcd's
        users or roles changed): it is forgotten, and the next ``login`` buys a new one."""
        if self.access is None or not self.access.user or not _says(error, *_STALE_TOKEN):
            return False
        with self._login_lock:
            self._logged_in = False
        log.info("etcd's auth token for %s went stale (%s); logging in again", self.target, _describe(error))
        return True

    def close(self) -> None:
        self._channel.close()


# etcd's words for a token it no longer takes (rpctypes: ErrGRPCInvalidAuthToken, ErrGRPCAuthOldRevision).
_STALE_TOKEN = ("invalid auth token", "revision of auth store is old")


def _says(error: Exception, *words: str) -> bool:
    text = _describe(error)
    return any(word in text for word in words)


def _refusal(error: Exception, access) -> str:
    """What etcd refused, and how to fix it, when ``error`` is a refusal no retry cures; "" else.
    etcd's words are in etcdserver/api/v3rpc/rpctypes/error.go; a TLS handshake's are gRPC's
    (BoringSSL's reasons: CERTIFICATE_VERIFY_FAILED, WRONG_VERSION_NUMBER, ...)."""
    user = access.user if access is not None else ""
    text = _describe(error)
    if "user name is empty" in text:
        return ("authentication is on and svc sent no user (etcd says \"user name is empty\"): set ETCD_USER "
                "and ETCD_PASSWORD, as for etcdctl --user")
    if "authentication failed" in text:
        return (f"the login of user {user!r} failed (etcd says \"invalid user ID or password\"): check "
                "ETCD_USER and ETCD_PASSWORD (etcdctl user list, etcdctl user passwd)")
    if "permission denied" in text:
        return (f"user {user!r} may not do this (etcd says \"permission denied\"): grant it a role with "
                "readwrite on ETCD_PREFIX (etcdctl role grant-permission <role> readwrite <prefix>/ --prefix)")
    if "user name not found" in text or "role is not granted" in text:
        return f"{text}: check ETCD_USER and its roles (etcdctl user get {user or '<user>'})"
    if access is not None and access.tls and "TSI_DATA_CORRUPTED" in text:
        # TLS 1.3: etcd (--client-cert-auth) rejects the client's certificate, or its absence, after
        # the client's side of the handshake: the first record read fails, at every attempt.
        return (f"etcd did not take svc's client certificate ({text}): set ETCD_CERT and ETCD_KEY to a "
                "certificate signed by the CA etcd trusts (its --trusted-ca-file), as etcdctl --cert/--key")
    # SSL_ERROR_SSL: the handshake itself went wrong (not a connection lost during it, SSL_ERROR_SYSCALL)
    if "CERTIFICATE_VERIFY_FAILED" in text or ("andshake" in text and "SSL_ERROR_SSL" in text):
        if access is not None and access.tls:
            hint = ("check ETCD_CACERT (the CA that signed etcd's certificate, as etcdctl --cacert), and "
                    "ETCD_CERT/ETCD_KEY when etcd asks for a client certificate (--client-cert-auth)")
        else:
            hint = "etcd speaks TLS there? set ETCD_CACERT (and ETCD_CERT/ETCD_KEY) or write https://"
        return f"the TLS handshake failed ({text}): {hint}"
    return ""


def _tls_hint(error: Exception, access) -> str:
    """For a connection closed as soon as it opened: what that often means (TLS spoken on one side
    only; the same is seen while etcd restarts, so it is retried, not refused)."""
    text = _describe(error)
    tls = access is not None and access.tls
    if not tls and text.endswith("Socket closed"):
        return " (an etcd serving TLS closes plain connections: set ETCD_CACERT, or write https://)"
    if tls and "Handshake read failed" in text:
        return " (an etcd without TLS closes TLS connections: unset ETCD_CACERT/ETCD_CERT, or write http://)"
    return ""


def _describe(error: Exception) -> str:
    details = getattr(error, "details", None)
    code = getattr(error, "code", None)
    if callable(details) and callable(code):
        return f"{code().name}: {details()}"
    return f"{type(error).__name__}: {error}"
