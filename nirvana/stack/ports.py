"""Who holds a port: the program named in "port ... is held by ..." errors and in ``status``."""

from __future__ import annotations

import socket

import psutil

from ..errors import StackError
from .component import HOST, Component, tcp_open


def port_holder(port: int, kind: str = "tcp") -> str | None:
    """The program listening on 127.0.0.1:``port`` (or on all interfaces), or None if free."""
    if kind == "tcp":
        wanted = lambda c: c.status == psutil.CONN_LISTEN  # noqa: E731
    else:
        wanted = lambda c: c.type == socket.SOCK_DGRAM  # noqa: E731
    try:
        connections = psutil.net_connections(kind=f"{kind}4")
    except psutil.AccessDenied:
        connections = []
    for conn in connections:
        if conn.laddr and conn.laddr.port == port and conn.laddr.ip in (HOST, "0.0.0.0") and wanted(conn):
            return _describe(conn.pid)
    if kind == "tcp" and tcp_open(port, timeout=0.3):
        return "a program this user cannot see"
    return None


def _describe(pid: int | None) -> str:
    if pid is None:
        return "a program this user cannot see"
    try:
        return f"{psutil.Process(pid).name()} (pid {pid})"
    except psutil.Error:
        return f"pid {pid}"


def held_error(component: Component, port: int, holder: str, kind: str = "tcp") -> StackError:
    return StackError(f"port {port}/{kind} that {component.name} needs is held by {holder}: "
                      f"stop that program or free the port, then run `./kit up` again")


def check_free(component: Component) -> None:
    """Raise StackError naming the holder when one of the component's ports is taken."""
    for port in component.tcp_ports:
        holder = port_holder(port)
        if holder:
            raise held_error(component, port, holder)
    for port in component.udp_ports:
        holder = port_holder(port, "udp")
        if holder:
            raise held_error(component, port, holder, "udp")
