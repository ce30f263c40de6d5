"""The egress guard: an upstream (an external deployment, an app member) may not point at this
machine or a private network unless an admin allows it (``egress_allow_private``).

Otherwise any user could make the server fetch ``http://169.254.169.254/`` (cloud metadata),
``http://localhost:5432`` or a neighbour on the private network on their behalf. The URL is
checked when the upstream is created (IP literals and ``localhost`` names) and again before each
request (every address its host name resolves to).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from loraloop.errors import InvalidRequest, PermissionDenied

__all__ = ["check_address", "check_url", "private_reason"]


def private_reason(address: str) -> str | None:
    """Why ``address`` (an IP) is not public, or None for a public address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, why in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (cloud metadata lives there)"),
        (ip.is_private, "private"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
    ):
        if test:
            return why
    return None


def _refuse(url: str, host: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"upstream_url {url!r} points at {host}, a {why} address; an administrator can allow "
        "private upstreams with LORALOOP_EGRESS_ALLOW_PRIVATE=true",
        code="egress_refused",
        param="upstream_url",
    )


def check_url(url: str, *, allow_private: bool) -> None:
    """At creation: refuse IP literals and ``localhost`` names that are not public."""
    if allow_private:
        return
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise _refuse(url, host, "loopback")
    why = private_reason(host)
    if why:
        raise _refuse(url, host, why)


def check_address(url: str, *, allow_private: bool) -> None:
    """Before a request: every address the host resolves to must be public."""
    if allow_private:
        return
    check_url(url, allow_private=False)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError:
        return  # unresolvable: the request itself fails with a clear upstream error
    for *_rest, sockaddr in infos:
        why = private_reason(str(sockaddr[0]))
        if why:
            raise PermissionDenied(
                f"the upstream {host} resolves to {sockaddr[0]}, a {why} address; an "
                "administrator can allow private upstreams with LORALOOP_EGRESS_ALLOW_PRIVATE",
                code="egress_refused",
            )
