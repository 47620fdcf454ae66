"""``http://`` and ``https://`` sources: fetched only from hosts on ``allowed_hosts``.

A URL passes when its parsed host name (lower-cased, IDNA) equals an entry of
``allowed_hosts`` or ends in ``.domain`` for a ``*.domain`` entry; an entry with a port
also needs that port. URLs with user information, backslashes, whitespace or control
characters are refused outright, since parsers disagree about where their host is. A URL
may be an IRI (RFC 3987): its host goes through IDNA and the other non-ASCII characters
are sent percent-encoded as UTF-8, while the reference itself, and so its version, stays
as written.

The download is made with :mod:`http.client` so that the address is ours to choose: the
host name is resolved here, every address it has must be a global one (loopback,
private, link-local, multicast, reserved and the like are refused unless
``allow_private_addresses``), and the connection goes to that checked address with the
name in the ``Host`` header and TLS's SNI. Each redirect hop is checked the same way, its
target must be on ``allowed_hosts`` too, and at most ``max_redirects`` are followed.
``download_timeout`` is one deadline for the whole download: name lookups, connects, TLS
handshakes and every send and receive of every hop are given only the time left (see
:class:`_DeadlineSocket`). ``max_source_bytes`` is checked against ``Content-Length`` and
then while the body streams into a temporary file, which is deleted when the handle is
closed.

A URL is taken to name bytes that never change: its version is the reference itself, so
registration does no network I/O to check it; to publish a new image, change the URL.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import time
from urllib.parse import quote, urljoin, urlsplit

from ..errors import LimitError, SourceError, SourceNotFoundError, UnavailableError

_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# C0 and C1 controls, space, DEL and a backslash: RFC 3987 allows none of them in an IRI.
_REFUSED = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _new_resolver() -> concurrent.futures.ThreadPoolExecutor:
    # Name lookups run here so that they count against the download's deadline: getaddrinfo
    # itself cannot be given a timeout.
    return concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fileproc-resolve")


def _resolver_after_fork() -> None:
    # A forked child (a pre-forking web server) inherits the executor but not its threads:
    # its lookups would wait in the queue until every download timed out.
    global _resolver
    _resolver = _new_resolver()


_resolver = _new_resolver()
os.register_at_fork(after_in_child=_resolver_after_fork)


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """What an http(s) source needs from the configuration."""

    allowed_hosts: tuple[str, ...]
    timeout: float
    max_redirects: int
    allow_private_addresses: bool

    @classmethod
    def from_config(cls, config) -> HttpSettings:
        return cls(
            config.allowed_hosts,
            config.download_timeout,
            config.max_redirects,
            config.allow_private_addresses,
        )


@dataclasses.dataclass(frozen=True)
class HttpSource:
    """A URL on an allowed host; ``open`` downloads it, ``version`` is the URL itself."""

    reference: str
    settings: HttpSettings

    def version(self) -> str:
        """The reference: URLs are taken as immutable (to change the image, change the URL)."""
        return self.reference

    def open(self, max_bytes: int):
        """The downloaded bytes in a temporary file, positioned at its start."""
        return _Download(self.reference, self.settings, max_bytes).run()


def check_url(reference: str, url: str, settings: HttpSettings) -> tuple[str, str, int, str]:
    """(scheme, host, port, request target) of ``url`` if its host is allowed; raises SourceError.

    ``url`` may be an IRI: the host is returned as IDNA and the request target in ASCII,
    its non-ASCII characters percent-encoded as UTF-8 (RFC 3987, section 3.1).
    ``reference`` is what the error names (the URL registered, which may differ from a
    redirect's target).
    """
    if _REFUSED.search(url):
        raise SourceError(f"source {reference!r}: URLs with spaces, control characters or '\\' are refused")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. a host whose NFKC form has a '/', '?', '#' or '@'
        raise SourceError(f"source {reference!r}: {url!r} cannot be parsed ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise SourceError(f"source {reference!r}: only http and https URLs can be fetched, not {url!r}")
    if "@" in parts.netloc:
        raise SourceError(f"source {reference!r}: URLs with user information ('user@host') are refused")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise SourceError(f"source {reference!r}: the URL's port is not a number from 1 to 65535") from None
    host = _ascii_host(reference, url, parts.hostname or "")
    if not _allowed(host, port, settings.allowed_hosts):
        where = f"host {host!r}" if parts.port is None else f"host {host!r} (port {port})"
        raise SourceError(f"source {reference!r}: {where} is not on allowed_hosts")
    path = parts.path or "/"
    target = f"{path}?{parts.query}" if parts.query else path
    try:
        # Only what is not ASCII: '%XX' already there and reserved characters keep their meaning.
        return scheme, host, port, _NON_ASCII.sub(lambda match: quote(match[0], safe=""), target)
    except UnicodeEncodeError:
        raise SourceError(f"source {reference!r}: {url!r} is not valid Unicode") from None


def _ascii_host(reference: str, url: str, name: str) -> str:
    """The host name as DNS sees it; SourceError for anything but a plain name or IPv4 address."""
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as error:
        raise SourceError(
            f"source {reference!r}: the host name {name!r} cannot be converted to ASCII by IDNA ({error})"
        ) from None
    labels = ascii_name.split(".")
    if not ascii_name or not all(_LABEL.match(label) for label in labels):
        # Includes IPv6 literals, empty labels, a trailing dot and percent-encoded names.
        raise SourceError(f"source {reference!r}: {url!r} has no valid host name")
    return ascii_name


def _allowed(host: str, port: int, allowed_hosts: tuple[str, ...]) -> bool:
    for entry in allowed_hosts:
        name, _, wanted_port = entry.partition(":")
        if wanted_port and int(wanted_port) != port:
            continue
        if name.startswith("*."):
            if host.endswith(name[1:]):  # "*.example.com": subdomains, not example.com itself
                return True
        elif host == name:
            return True
    return False


def refused_address(address: str) -> bool:
    """Whether ``address`` is one a server must not be made to fetch from by default."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:
            return True
        ip = ip.ipv4_mapped or ip  # ::ffff:127.0.0.1 is loopback too
    return (
        ip.is_loopback
        or ip.is_unspecified
        or ip.is_link_local
        or ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or not ip.is_global
    )


class _DeadlineSocket:
    """A connected socket (plain or TLS) whose every send and receive gets only the time left.

    http.client reads the status line, headers, chunk sizes and trailers a line at a time,
    each line as many receives as the origin likes; a timeout per receive would let an
    origin that sends one byte a second hold a worker for as long as it wants. Arming each
    operation with ``deadline - now`` bounds the whole exchange instead, whatever
    http.client's reading pattern, and once the deadline has passed every operation fails
    with TimeoutError without touching the network.

    ``makefile`` and ``close`` keep the socket's own contract, which http.client relies on:
    when the origin will close the connection, http.client closes it while the response
    still reads, and the socket really closes when both are closed.
    """

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline
        self._readers = 0
        self._closed = False

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left)

    def recv_into(self, buffer) -> int:
        self._arm()
        return self._sock.recv_into(buffer)

    def sendall(self, data) -> None:
        self._arm()
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only 'rb' is supported, not {mode!r}")
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def reader_closed(self) -> None:
        self._readers -= 1
        self._close_when_done()

    def close(self) -> None:
        self._closed = True
        self._close_when_done()

    def _close_when_done(self) -> None:
        if self._closed and self._readers <= 0:
            self._sock.close()


class _DeadlineReader(io.RawIOBase):
    """The raw stream under http.client's buffered response reader."""

    def __init__(self, sock: _DeadlineSocket):
        super().__init__()
        self._owner = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._owner.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._owner.reader_closed()


class _Connection(http.client.HTTPConnection):
    """http.client's requests and responses over a socket :class:`_Download` opened itself."""

    auto_open = 0  # never reconnect on its own: that would skip the address check and pin

    def __init__(self, host: str, port: int, scheme: str, sock: _DeadlineSocket):
        super().__init__(host, port)
        # The Host header leaves out the port when it is the scheme's default.
        self.default_port = 443 if scheme == "https" else 80
        self.sock = sock


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Made on first use: loading the CA certificates is not worth it for local sources only.
    return ssl.create_default_context()


class _Download:
    """One download of a reference, following redirects, within the deadline and byte cap."""

    def __init__(self, reference: str, settings: HttpSettings, max_bytes: int):
        self.reference = reference
        self.settings = settings
        self.max_bytes = max_bytes
        self.deadline = time.monotonic() + settings.timeout
        self.stage = "starting"  # what a timeout names: where the download stalled

    def run(self):
        url = self.reference
        for _hop in range(self.settings.max_redirects + 1):
            scheme, host, port, target = check_url(self.reference, url, self.settings)
            addresses = self._resolve(host, port)
            connection = _Connection(host, port, scheme, self._open(scheme, host, port, addresses))
            response = None
            try:
                response = self._get(connection, target)
                if response.status in _REDIRECTS:
                    url = self._redirect_target(url, response, host)
                    continue
                self._check_status(response.status, host)
                return self._save(response, host)
            finally:
                if response is not None:
                    response.close()
                connection.close()
        raise SourceError(
            f"source {self.reference!r}: more than max_redirects={self.settings.max_redirects} redirects"
        )

    def _remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        return remaining

    def _timed_out(self) -> UnavailableError:
        return UnavailableError(
            f"source {self.reference!r}: download took longer than "
            f"download_timeout={self.settings.timeout:g} seconds (timed out {self.stage})"
        )

    def _failed(self, error: BaseException, what: str) -> UnavailableError:
        if isinstance(error, TimeoutError) or time.monotonic() >= self.deadline:
            return self._timed_out()
        return UnavailableError(f"source {self.reference!r}: {what} ({_reason(error)})")

    def _resolve(self, host: str, port: int) -> list[str]:
        self.stage = f"looking up {host}"
        future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            found = future.result(timeout=self._remaining())
        except concurrent.futures.TimeoutError:
            raise self._timed_out() from None
        except OSError as error:
            raise UnavailableError(
                f"source {self.reference!r}: cannot resolve {host} ({error.strerror or error})"
            ) from None
        # An IPv4 or IPv6 address is text (typeshed's sockaddr also has other families' ints).
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        if not self.settings.allow_private_addresses:
            for address in addresses:
                # One non-global address refuses the host: a name that sometimes points
                # inside the network is not one to follow.
                if refused_address(address):
                    raise SourceError(
                        f"source {self.reference!r}: {host} resolves to {address}, a loopback, private "
                        "or otherwise non-global address (allow_private_addresses is off)"
                    )
        return addresses

    def _open(self, scheme: str, host: str, port: int, addresses: list[str]) -> _DeadlineSocket:
        """A socket to the first checked address that answers, TLS verified against ``host``."""
        reason = "no address"
        for address in addresses:
            self.stage = f"connecting to {host}"
            sock = None
            try:
                sock = socket.create_connection((address, port), self._remaining())
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":
                    self.stage = f"in the TLS handshake with {host}"
                    sock.settimeout(self._remaining())
                    # The handshake is bounded by that timeout as a whole, not per read.
                    sock = _tls_context().wrap_socket(sock, server_hostname=host)
                return _DeadlineSocket(sock, self.deadline)
            except ssl.SSLCertVerificationError as error:
                raise SourceError(
                    f"source {self.reference!r}: {host}'s certificate is not valid ({error.verify_message})"
                ) from None
            except (OSError, ssl.SSLError) as error:
                if sock is not None:
                    sock.close()  # a failed handshake has closed its own socket; this one is detached
                if isinstance(error, TimeoutError):
                    raise self._timed_out() from None
                reason = error.strerror or str(error)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
        self._remaining()
        raise UnavailableError(f"source {self.reference!r}: cannot connect to {host}:{port} ({reason})")

    def _get(self, connection: _Connection, target: str) -> http.client.HTTPResponse:
        try:
            self.stage = f"sending the request to {connection.host}"
            connection.request(
                "GET", target, headers={"User-Agent": "fileproc_wsgi", "Accept-Encoding": "identity"}
            )
            self.stage = f"reading the status line and headers from {connection.host}"
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            raise self._failed(error, f"no answer from {connection.host}") from None

    def _redirect_target(self, url: str, response: http.client.HTTPResponse, host: str) -> str:
        location = response.getheader("Location")
        if not location:
            raise SourceError(
                f"source {self.reference!r}: {host} answered {response.status} without a Location"
            )
        try:
            return urljoin(url, _location_text(location.strip()))
        except ValueError as error:  # e.g. an unclosed '[' where an IPv6 host would be
            raise SourceError(
                f"source {self.reference!r}: {host} redirected to {location!r} ({error})"
            ) from None

    def _check_status(self, status: int, host: str) -> None:
        if status == 200:
            return
        if status in (404, 410):
            raise SourceNotFoundError(f"source {self.reference!r} does not exist ({host} answered {status})")
        if status >= 500 or status in (408, 429):
            raise UnavailableError(
                f"source {self.reference!r}: {host} answered {status}; will try again later"
            )
        raise SourceError(f"source {self.reference!r}: {host} answered {status}")

    def _save(self, response: http.client.HTTPResponse, host: str):
        length = response.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > self.max_bytes:
            raise self._too_big(f"{int(length)} bytes")
        self.stage = f"reading the body from {host}"
        # A real file, not a spooled one: some engines want a file descriptor.
        handle = tempfile.TemporaryFile(prefix="fileproc-download-")  # noqa: SIM115 - the caller closes it
        try:
            received = 0
            # Bounded: every pass but the last adds at least a byte, and max_bytes caps them;
            # every receive is held to the deadline by the socket.
            while True:
                try:
                    # read1: one read from the socket at most, so the byte cap is checked often.
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    raise self._failed(error, "download broke off") from None
                if not chunk:
                    break
                received += len(chunk)
                if received > self.max_bytes:
                    raise self._too_big(f"more than {self.max_bytes} bytes")
                handle.write(chunk)
            if response.length:
                # http.client ends a Content-Length body quietly when the origin hangs up early.
                raise UnavailableError(
                    f"source {self.reference!r}: download broke off after {received} of "
                    f"{received + response.length} bytes"
                )
            handle.seek(0)
            return handle
        except BaseException:
            handle.close()
            raise

    def _too_big(self, size: str) -> LimitError:
        return LimitError(
            f"source {self.reference!r} has {size}, more than max_source_bytes={self.max_bytes}"
        )


def _location_text(value: str) -> str:
    """A Location header's value as a URL or IRI for ``urljoin`` and :func:`check_url`.

    http.client decodes header bytes as Latin-1. Bytes that are valid UTF-8 are taken as an
    IRI (RFC 3987 says to write one so, and most servers do); other non-ASCII bytes are
    percent-encoded as they are, as Chromium and curl do, which reaches the resource the
    origin named in its own encoding.
    """
    raw = value.encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return re.sub(rb"[\x80-\xff]", lambda match: b"%%%02X" % match[0][0], raw).decode("ascii")


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
