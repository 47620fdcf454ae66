"""``http://`` and ``https://`` sources: fetched only from hosts on ``allowed_hosts``.

A URL passes when its parsed host name (lower-cased, IDNA) equals an entry of
``allowed_hosts`` or ends in ``.domain`` for a ``*.domain`` entry; an entry with a port
also needs that port. URLs with user information, backslashes, whitespace or control
characters are refused outright, since parsers disagree about where their host is.

The download is made with :mod:`http.client` so that the address is ours to choose: the
host name is resolved here, every address it has must be a global one (loopback,
private, link-local, multicast, reserved and the like are refused unless
``allow_private_addresses``), and the connection goes to that checked address with the
name in the ``Host`` header and TLS's SNI. Each redirect hop is checked the same way, its
target must be on ``allowed_hosts`` too, and at most ``max_redirects`` are followed.
``download_timeout`` is a deadline for the whole download (name lookup, connect and every
read), and ``max_source_bytes`` is checked against ``Content-Length`` and then while the
body streams into a temporary file, which is deleted when the handle is closed.

A URL is taken to name bytes that never change: its version is the reference itself, so
registration does no network I/O to check it; to publish a new image, change the URL.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import http.client
import ipaddress
import re
import socket
import ssl
import tempfile
import time
from urllib.parse import urljoin, urlsplit

from .errors import LimitError, SourceError, SourceNotFoundError, UnavailableError

_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Name lookups run here so that they count against the download's deadline: getaddrinfo
# itself cannot be given a timeout.
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fileproc-resolve")


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
    """(scheme, host, port, path) of ``url`` if its host is allowed; raises SourceError.

    ``reference`` is what the error names (the URL registered, which may differ from a
    redirect's target).
    """
    if re.search(r"[\x00-\x20\x7f\\]", url):
        raise SourceError(f"source {reference!r}: URLs with spaces, control characters or '\\' are refused")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise SourceError(f"source {reference!r}: only http and https URLs can be fetched, not {url!r}")
    if "@" in parts.netloc:
        raise SourceError(f"source {reference!r}: URLs with user information ('user@host') are refused")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise SourceError(f"source {reference!r}: the URL's port is not a number from 1 to 65535") from None
    host = _ascii_host(parts.hostname or "")
    if host is None:
        raise SourceError(f"source {reference!r}: {url!r} has no valid host name")
    if not _allowed(host, port, settings.allowed_hosts):
        where = f"host {host!r}" if parts.port is None else f"host {host!r} (port {port})"
        raise SourceError(f"source {reference!r}: {where} is not on allowed_hosts")
    path = parts.path or "/"
    return scheme, host, port, f"{path}?{parts.query}" if parts.query else path


def _ascii_host(name: str) -> str | None:
    """The host name as DNS sees it, or None for anything that is not a plain name or IPv4 address."""
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_name.split(".")
    if not ascii_name or not all(_LABEL.match(label) for label in labels):
        return None  # includes IPv6 literals, empty labels and a trailing dot
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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to one already checked address, whatever the host name resolves to now."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """The same over TLS; the certificate is checked against the host name, not the address."""

    default_port = 443

    def connect(self) -> None:
        super().connect()
        self.sock = _tls_context().wrap_socket(self.sock, server_hostname=self.host)


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

    def run(self):
        url = self.reference
        for _hop in range(self.settings.max_redirects + 1):
            scheme, host, port, path = check_url(self.reference, url, self.settings)
            addresses = self._resolve(host, port)
            connection = self._connect(scheme, host, port, addresses)
            try:
                sock = connection.sock  # kept: a response that closes the connection takes it over
                response = self._get(connection, path)
                if response.status in _REDIRECTS:
                    location = response.getheader("Location")
                    if not location:
                        raise SourceError(
                            f"source {self.reference!r}: {host} answered {response.status} without a Location"
                        )
                    url = urljoin(url, location.strip())
                    continue
                self._check_status(response.status, host)
                return self._save(response, sock)
            finally:
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
            f"download_timeout={self.settings.timeout:g} seconds"
        )

    def _resolve(self, host: str, port: int) -> list[str]:
        future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            found = future.result(timeout=self._remaining())
        except concurrent.futures.TimeoutError:
            raise self._timed_out() from None
        except OSError as error:
            raise UnavailableError(
                f"source {self.reference!r}: cannot resolve {host} ({error.strerror or error})"
            ) from None
        addresses = list(dict.fromkeys(info[4][0] for info in found))
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

    def _connect(self, scheme: str, host: str, port: int, addresses: list[str]):
        kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        reason = "no address"
        for address in addresses:
            connection = kind(host, port, address, self._remaining())
            try:
                connection.connect()
                return connection
            except ssl.SSLCertVerificationError as error:
                connection.close()
                raise SourceError(
                    f"source {self.reference!r}: {host}'s certificate is not valid ({error.verify_message})"
                ) from None
            except (OSError, ssl.SSLError) as error:
                connection.close()
                reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        self._remaining()
        raise UnavailableError(f"source {self.reference!r}: cannot connect to {host}:{port} ({reason})")

    def _get(self, connection, path: str) -> http.client.HTTPResponse:
        try:
            connection.sock.settimeout(self._remaining())
            connection.request(
                "GET", path, headers={"User-Agent": "fileproc_wsgi", "Accept-Encoding": "identity"}
            )
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            self._remaining()
            raise UnavailableError(
                f"source {self.reference!r}: no answer from {connection.host} ({_reason(error)})"
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

    def _save(self, response: http.client.HTTPResponse, sock: socket.socket):
        length = response.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > self.max_bytes:
            raise self._too_big(f"{int(length)} bytes")
        # A real file, not a spooled one: some engines want a file descriptor.
        handle = tempfile.TemporaryFile(prefix="fileproc-download-")  # noqa: SIM115 - the caller closes it
        try:
            received = 0
            while True:
                sock.settimeout(self._remaining())
                try:
                    # read1: at most one read from the socket, so a trickling server meets
                    # the deadline instead of keeping a buffered read waiting for a full chunk.
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    self._remaining()
                    raise UnavailableError(
                        f"source {self.reference!r}: download broke off ({_reason(error)})"
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > self.max_bytes:
                    raise self._too_big(f"more than {self.max_bytes} bytes")
                handle.write(chunk)
            handle.seek(0)
            return handle
        except BaseException:
            handle.close()
            raise

    def _too_big(self, size: str) -> LimitError:
        return LimitError(
            f"source {self.reference!r} has {size}, more than max_source_bytes={self.max_bytes}"
        )


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
