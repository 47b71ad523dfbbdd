"""svc against an etcd that wants a login or TLS, as production etcds do: throwaway etcds with
authentication enabled (``etcdctl user add``, ``etcdctl auth enable``) and with TLS (a CA and
certificates made here with ``openssl``). Refusals stop svc with one line and exit status 2,
never "deduplication waits for etcd (is it running?)"."""

import shutil
import signal
import subprocess
import time

import pytest

from svc.config import parse_endpoints
from nirvana.testing import wait_for

PASSWORD = "s3cret-pw"


def _enable_auth(endpoint: str) -> None:
    """What ``etcdctl user add root``, ``role add``, ``role grant-permission``, ``user grant-role``
    and ``auth enable`` do, through etcd's Auth API (etcdctl is in another package, etcd-client):
    root (password PASSWORD), and a user ``outsider`` who may write only under /elsewhere/."""
    import grpc
    from etcd3.etcdrpc import auth_pb2

    from svc import etcd as _etcd

    rpc = _etcd._rpc()
    with grpc.insecure_channel(endpoint) as channel:
        auth = rpc.AuthStub(channel)
        permission = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"/elsewhere/",
                                         range_end=_etcd.prefix_end(b"/elsewhere/"))
        for call, request in ((auth.UserAdd, rpc.AuthUserAddRequest(name="root", password=PASSWORD)),
                              (auth.UserGrantRole, rpc.AuthUserGrantRoleRequest(user="root", role="root")),
                              (auth.RoleAdd, rpc.AuthRoleAddRequest(name="elsewhere")),
                              (auth.RoleGrantPermission, rpc.AuthRoleGrantPermissionRequest(name="elsewhere",
                                                                                           perm=permission)),
                              (auth.UserAdd, rpc.AuthUserAddRequest(name="outsider", password=PASSWORD)),
                              (auth.UserGrantRole, rpc.AuthUserGrantRoleRequest(user="outsider", role="elsewhere")),
                              (auth.AuthEnable, rpc.AuthEnableRequest())):
            call(request, timeout=10)


@pytest.fixture
def auth_etcd(etcd_factory):
    """A throwaway etcd with authentication on (see _enable_auth); simple tokens live 2 s without
    use (--auth-token-ttl)."""
    own = etcd_factory("--auth-token-ttl", "2")
    _enable_auth(own.endpoint)
    return own


def _client(endpoint: str, **access):
    """svc's Etcd client of ``endpoint`` with ``access`` (svc.config.EtcdAccess's fields)."""
    from svc import Etcd
    from svc.config import EtcdAccess

    return Etcd(parse_endpoints(endpoint), timeout=10, access=EtcdAccess(**access))


def _refused(process, words: str) -> str:
    """Wait for ``process`` to exit; I expect status 2, ``words`` in its last line, no secret."""
    assert process.popen.wait(30) == 2, process.log()
    log = process.log()
    last = log.strip().splitlines()[-2]   # the refusal, then "<service> stopped"
    assert "ERROR" in last and words in last, log
    assert "is it running" not in log and "waits for etcd" not in log
    assert PASSWORD not in log
    return last


def test_svc_logs_in_to_an_etcd_with_authentication(svc_world, auth_etcd):
    from svc import counts_by_id

    orders = svc_world.service_name("orders")
    # Given an etcd with authentication on, and svc given its user and password...
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=auth_etcd.endpoint,
                                etcd_user="root", etcd_password=PASSWORD)
    etcd = _client(auth_etcd.endpoint, user="root", password=PASSWORD)
    try:
        # ... when events come, a repeat among them, I expect each processed once...
        ids = svc_world.publish(orders, {"type": "new_order", "id": "a"}, count=3, fresh_ids=True).ids
        svc_world.publish(orders, {"type": "new_order", "id": ids[0]})
        wait_for(lambda: counts_by_id(etcd, orders, prefix=svc_world.prefix) == dict.fromkeys(ids, 1),
                 "3 processed once")
        # ... and after its token expired (2 s without use, etcd's --auth-token-ttl; svc paused so
        # that nothing of it uses the token meanwhile), svc logs in again and goes on: an event
        # published then is processed too.
        process.signal(signal.SIGSTOP)
        try:
            time.sleep(4)
        finally:
            process.signal(signal.SIGCONT)
        svc_world.publish(orders, {"type": "new_order", "id": "after-expiry"})
        wait_for(lambda: counts_by_id(etcd, orders, prefix=svc_world.prefix).get("after-expiry") == 1,
                 "the event after the token expired processed")
        wait_for(lambda: svc_world.depth(orders) == 0, "the queue drained")
        log = process.log()
        assert "logging in again" in log and "invalid auth token" in log
        assert PASSWORD not in log and "as user root" in log and process.alive()
    finally:
        etcd.close()


# (settings, dedup on, the words of the refusal line)
REFUSALS = {
    "no user": ({}, True, "user name is empty"),
    "wrong password": ({"etcd_user": "root", "etcd_password": "wrong"}, True, "login of user 'root' failed"),
    "no permission": ({"etcd_user": "outsider", "etcd_password": PASSWORD}, True, "permission denied"),
    "dedup off, no user": ({}, False, "user name is empty"),
}


@pytest.mark.parametrize("settings, dedup, words", REFUSALS.values(), ids=REFUSALS.keys())
def test_an_etcd_refusal_stops_svc_with_one_line_and_exit_2(svc_world, auth_etcd, settings, dedup, words):
    orders = svc_world.service_name("orders")
    # Given svc started against an etcd with authentication, with no user, a wrong password or a
    # user without permission on ETCD_PREFIX (with dedup off, etcd is first met by the first effect)...
    [process] = svc_world.start(orders, enable_etcd=dedup, etcd_endpoints=auth_etcd.endpoint, wait=False,
                                **settings)
    if not dedup:
        svc_world.wait_consumers(orders, 1, [process])
        svc_world.publish(orders, {"type": "new_order", "id": "x"})
    # ... I expect it to stop with one line naming the refusal and the fix, exit status 2, and the
    # event still in its queue.
    _refused(process, words)
    wait_for(lambda: svc_world.depth(orders) == (0 if dedup else 1), "the event back in the queue")


# -- TLS -----------------------------------------------------------------------------------------

def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(folder, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}", cwd=folder)


def _signed(folder, name: str, ca: str) -> None:
    (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture
def tls_etcd(etcd_factory, tmp_path):
    """(a throwaway etcd serving TLS that asks for a client certificate signed by its CA, the
    folder holding ca.crt, server.*, client.* and another CA, other.crt)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pki = tmp_path / "pki"
    pki.mkdir()
    _ca(pki, "ca")
    _ca(pki, "other")
    _signed(pki, "server", "ca")
    _signed(pki, "client", "ca")
    own = etcd_factory("--cert-file", str(pki / "server.crt"), "--key-file", str(pki / "server.key"),
                       "--client-cert-auth", "--trusted-ca-file", str(pki / "ca.crt"))
    return own, pki


def test_svc_speaks_tls_to_etcd_with_a_client_certificate(svc_world, tls_etcd):
    from svc import counts_by_id

    own, pki = tls_etcd
    orders = svc_world.service_name("orders")
    tls = {"etcd_cacert": pki / "ca.crt", "etcd_cert": pki / "client.crt", "etcd_key": pki / "client.key"}
    # Given an etcd that speaks TLS only, to clients with a certificate of its CA...
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.url, **tls)
    etcd = _client(own.endpoint, tls=True, **{name: (pki / f"{file}").read_bytes() for name, file in
                                              (("ca", "ca.crt"), ("cert", "client.crt"), ("key", "client.key"))})
    try:
        # ... I expect svc to work with it as with any etcd: events processed once.
        ids = svc_world.publish(orders, {"type": "new_order", "id": "t"}, count=3, fresh_ids=True).ids
        svc_world.publish(orders, {"type": "new_order", "id": ids[0]})
        wait_for(lambda: counts_by_id(etcd, orders, prefix=svc_world.prefix) == dict.fromkeys(ids, 1),
                 "3 processed once")
        assert "https://" in process.log() and process.alive()
    finally:
        etcd.close()


TLS_REFUSALS = {
    "another CA": (("other.crt", "client.crt", "client.key"), "TLS handshake failed", "ETCD_CACERT"),
    "no client certificate": (("ca.crt", "", ""), "did not take svc's client certificate", "ETCD_CERT"),
}


@pytest.mark.parametrize("files, words, variable", TLS_REFUSALS.values(), ids=TLS_REFUSALS.keys())
def test_a_tls_handshake_etcd_refuses_stops_svc_with_one_line_and_exit_2(svc_world, tls_etcd, files, words,
                                                                         variable):
    own, pki = tls_etcd
    orders = svc_world.service_name("orders")
    # Given svc told to trust another CA than the one that signed etcd's certificate, or given no
    # client certificate for an etcd that asks for one (--client-cert-auth)...
    settings = {name: pki / file for name, file in zip(("etcd_cacert", "etcd_cert", "etcd_key"), files, strict=True)
                if file}
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.url, wait=False, **settings)
    # ... I expect one line naming what failed and the variable to fix, exit status 2.
    last = _refused(process, words)
    assert variable in last
    assert "Handshake failed" not in process.log()   # gRPC's own line on stderr: said once, by svc


def test_plain_svc_against_a_tls_etcd_says_what_a_closed_connection_may_mean(svc_world, tls_etcd):
    own, _ = tls_etcd
    orders = svc_world.service_name("orders")
    # Given svc speaking plain gRPC to an etcd that speaks TLS only (it closes the connection, as
    # an etcd restarting may: retried, not refused)...
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.endpoint, wait=False)
    # ... I expect its waiting line to say what that often means and how to fix it.
    wait_for(lambda: "set ETCD_CACERT, or write https://" in process.log(), "the TLS hint")
    assert process.alive()


@pytest.mark.parametrize("settings, words", [
    ({"etcd_cacert": "/nonexistent/ca.crt"}, "ETCD_CACERT='/nonexistent/ca.crt' cannot be read"),
    ({"etcd_cert": "/etc/hostname", "etcd_key": "/etc/hostname"}, "is not a PEM file"),
    ({"etcd_user": "root"}, "ETCD_PASSWORD is required"),
], ids=["missing CA file", "not PEM", "user without password"])
def test_a_bad_etcd_access_setting_is_one_line_and_exit_2(svc_world, settings, words):
    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders, enable_etcd=True, wait=False, **settings)
    assert process.popen.wait(20) == 2
    assert process.log().strip().splitlines() == [process.log().strip()] and words in process.log()


def test_the_kit_logs_in_with_the_settings_it_hands_its_services(auth_etcd, use_settings):
    from nirvana import effects as kit_effects
    from nirvana import settings
    from nirvana.stack.reset import etcd_client

    # Given the kit's settings naming an etcd with authentication, its user and password...
    env = {"ETCD_ENDPOINTS": auth_etcd.endpoint, "ETCD_USER": "root", "ETCD_PASSWORD": PASSWORD,
           "ETCD_PREFIX": "/kit-auth"}
    use_settings(settings.Settings.from_env(env))
    etcd = _client(auth_etcd.endpoint, user="root", password=PASSWORD)
    try:
        etcd.put("/kit-auth/effects/orders/x/1", "{}")
    finally:
        etcd.close()
    # ... I expect its helpers to read there logged in (effects, reset's client), and a service it
    # starts to be handed the same user and password.
    assert kit_effects.count(None, "orders") == 1 and kit_effects.counts_by_id(None, "orders") == {"x": 1}
    client = etcd_client()
    try:
        assert client.count_prefix("/kit-auth/") == 1
    finally:
        client.close()
    handed = settings.current().service_environment()
    assert (handed["ETCD_USER"], handed["ETCD_PASSWORD"]) == ("root", PASSWORD)


def test_the_dedup_watch_logs_in_too(auth_etcd):
    from svc.dedup import EtcdDedup, Verdict
    from svc.event import parse

    # Given two replicas' deduplications on an etcd with authentication...
    clients = [_client(auth_etcd.endpoint, user="root", password=PASSWORD) for _ in range(2)]
    watcher, worker = (EtcdDedup(client, "/w", "orders", claim_ttl=10, retention=60) for client in clients)
    try:
        watcher.open()
        worker.open()
        # ... when one processes an event, I expect the other to learn it from its watch (a stream
        # that carries the token too), so its copy is skipped without a claim.
        event = parse(b'{"type":"new_order","id":"seen"}')
        assert worker.claim([event]).result() == [Verdict.CLAIMED]
        assert worker.commit([event]).result() == [Verdict.OK]
        wait_for(lambda: b"seen" in watcher.done, "the watch to see the done mark")
    finally:
        for dedup in (watcher, worker):
            dedup.close()
        for client in clients:
            client.close()
