"""http(s) sources against a real HTTP server on 127.0.0.1: allowed hosts, address checks,
redirects, the byte cap and the download deadline.

The server runs in a thread of the test process; the sites opt in to loopback with
``allow_private_addresses=True``, which is exactly what the tests of the refusals leave off.
"""

from __future__ import annotations

import datetime
import http.server
import io
import os
import signal
import socketserver
import ssl
import threading
import time

import pytest

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import LimitError, SourceError, SourceNotFoundError, UnavailableError
from fileproc_wsgi.sources import Sources
from fileproc_wsgi.sources import http as http_sources
from fileproc_wsgi.sources.http import refused_address
from support import decode, free_port, halves


def _png(width: int = 60, height: int = 40) -> bytes:
    buffer = io.BytesIO()
    halves(width, height).save(buffer, "PNG")
    return buffer.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args):  # keep the test output quiet
        pass


class Origin:
    """A tiny origin server: ``routes`` maps a path to a function of the request handler."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.server.routes = {}
        self.server.hits = []
        self.port = self.server.server_address[1]
        self.routes = self.server.routes
        self.hits = self.server.hits
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def body(data: bytes, *, status: int = 200, length: bool = True):
    def send(handler):
        handler.send_response(status)
        if length:
            handler.send_header("Content-Length", str(len(data)))
        else:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)

    return send


def redirect(location: str, status: int = 302):
    def send(handler):
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return send


@pytest.fixture
def origin():
    server = Origin()
    yield server
    server.close()


def _sources(**settings) -> Sources:
    settings.setdefault("allowed_hosts", "127.0.0.1,localhost")
    settings.setdefault("allow_private_addresses", True)
    return Sources.for_config(Config(**settings))


def _fetch(reference: str, max_bytes: int = 10_000_000, **settings) -> bytes:
    with _sources(**settings).resolve(reference).open(max_bytes) as handle:
        return handle.read()


def test_allowed_host_end_to_end(make_site, origin):
    origin.routes["/photo.png"] = body(_png(60, 40))
    site = make_site(allowed_hosts="127.0.0.1", allow_private_addresses=True)
    text = f"{origin.url('/photo.png')}?v=2 | fit 30x30"
    representation = site.registrar.register(text)
    assert (representation.width, representation.height) == (30, 20)
    response = site.get(representation.url)
    assert response.status_int == 301
    response = site.get(response.location)
    assert response.status_int == 200
    assert decode(response.body).size == (30, 20)
    # Once at registration (the header read) and once to make the result.
    assert origin.hits == ["/photo.png?v=2", "/photo.png?v=2"]


def test_version_is_the_reference_and_needs_no_request(origin):
    source = _sources().resolve(origin.url("/photo.png?v=3"))
    assert source.version() == origin.url("/photo.png?v=3")
    assert origin.hits == []


def test_host_not_allowed(origin):
    with pytest.raises(SourceError, match="host 'example.org' is not on allowed_hosts"):
        _sources(allowed_hosts="example.com").resolve("https://example.org/a.png")


def test_no_allowed_hosts_means_not_enabled():
    with pytest.raises(SourceError, match="https sources are not enabled"):
        _sources(allowed_hosts=()).resolve("https://example.com/a.png")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://example.com@evil.com/a.png", id="userinfo-host"),
        pytest.param("http://user:pw@example.com/a.png", id="userinfo"),
        pytest.param("http://evil.com/example.com", id="host-in-path"),
        pytest.param("http://example.com.evil.com/a.png", id="suffix-domain"),
        pytest.param("http://evil.com#example.com", id="host-in-fragment"),
        pytest.param("http://evil.com?example.com", id="host-in-query"),
        pytest.param("http://evil.com\\@example.com/a.png", id="backslash"),
        pytest.param("http://example.com\\.evil.com/a.png", id="backslash-in-host"),
        pytest.param("http://evil.com\t.example.com/a.png", id="tab"),
        pytest.param("http://notexample.com/a.png", id="no-dot-before-domain"),
        pytest.param("http://example.com./a.png", id="trailing-dot"),
        pytest.param("http://example.com:99999/a.png", id="bad-port"),
        pytest.param("http://[::1]/a.png", id="ipv6-literal"),
        pytest.param("http:///a.png", id="no-host"),
        pytest.param("http://exa\u0300mple.com/a.png", id="unicode-lookalike"),
        pytest.param("http://b.example.com:8080/a.png", id="wrong-port"),
    ],
)
def test_tricky_urls_are_refused(url):
    sources = _sources(allowed_hosts="example.com,*.example.com:443")
    with pytest.raises(SourceError) as raised:
        sources.resolve(url)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://EXAMPLE.com/a.png", id="upper-case"),
        pytest.param("https://img.example.com/a.png", id="subdomain"),
        pytest.param("https://a.b.example.com:443/a.png?v=2", id="deeper-subdomain"),
    ],
)
def test_allowed_urls_pass(url):
    assert _sources(allowed_hosts="example.com,*.example.com:443").resolve(url).version() == url


@pytest.mark.parametrize(
    "address, refused",
    [
        ("127.0.0.1", True),
        ("0.0.0.0", True),
        ("10.1.2.3", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fec0::1", True),
        ("fd00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)
def test_non_global_addresses(address, refused):
    assert refused_address(address) is refused


def test_loopback_refused_without_the_opt_in(origin):
    origin.routes["/photo.png"] = body(_png())
    with pytest.raises(SourceError, match="resolves to 127.0.0.1.*allow_private_addresses is off"):
        _fetch(origin.url("/photo.png", host="localhost"), allow_private_addresses=False)
    assert origin.hits == []


def test_redirect_to_loopback_is_checked_at_each_hop(origin):
    # The first hop is allowed by name and would be global; here both are loopback, so the
    # check fails on the first connection already: the opt-in is per installation.
    origin.routes["/a.png"] = redirect(origin.url("/photo.png"))
    with pytest.raises(SourceError, match="non-global"):
        _fetch(origin.url("/a.png"), allow_private_addresses=False)


def test_redirects_are_followed(origin):
    origin.routes["/photo.png"] = body(b"the bytes")
    origin.routes["/a"] = redirect("/b", 301)
    origin.routes["/b"] = redirect(origin.url("/photo.png", host="localhost"), 307)
    assert _fetch(origin.url("/a")) == b"the bytes"


def test_redirect_to_a_host_not_allowed(origin):
    origin.routes["/a.png"] = redirect("http://evil.example/photo.png")
    with pytest.raises(SourceError, match="host 'evil.example' is not on allowed_hosts"):
        _fetch(origin.url("/a.png"))


def test_redirect_to_another_scheme(origin):
    origin.routes["/a.png"] = redirect("file:///etc/passwd")
    with pytest.raises(SourceError, match="only http and https"):
        _fetch(origin.url("/a.png"))


def test_redirect_loop_over_the_cap(origin):
    origin.routes["/loop"] = redirect("/loop")
    with pytest.raises(SourceError, match="more than max_redirects=3 redirects"):
        _fetch(origin.url("/loop"))
    assert len(origin.hits) == 4


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-content-length"])
def test_oversized_body_refused(origin, length):
    origin.routes["/big"] = body(b"x" * 200_000, length=length)
    with pytest.raises(LimitError, match="more than max_source_bytes=100000"):
        _fetch(origin.url("/big"), max_bytes=100_000)


def test_body_at_the_cap_passes(origin):
    origin.routes["/exact"] = body(b"x" * 100_000, length=False)
    assert len(_fetch(origin.url("/exact"), max_bytes=100_000)) == 100_000


def test_trickling_server_meets_the_deadline(origin):
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.05)

    origin.routes["/slow"] = trickle
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="longer than download_timeout=1 seconds"):
        _fetch(origin.url("/slow"), download_timeout=1)
    assert time.monotonic() - started < 2


def trickle(fast: bytes, slow: bytes, interval: float = 0.6):
    """A route that sends ``fast`` at once, then ``slow`` one byte per ``interval`` seconds.

    Every byte comes sooner than download_timeout=1, so only a deadline for the whole
    download stops it; it ends when the client hangs up, or after ``slow``.
    """

    def send(handler):
        try:
            handler.wfile.write(fast)
            for byte in slow:
                time.sleep(interval)
                handler.wfile.write(bytes([byte]))
        except OSError:
            pass  # the client gave up, which is what the test wants
        handler.close_connection = True

    return send


_OK = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
_CHUNKED = _OK + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "fast, slow, stage",
    [
        pytest.param(b"", b"HTTP/1.1 200 " + b"O" * 30, "status line and headers", id="status-line"),
        pytest.param(_OK, b"X-Pad: " + b"a" * 30, "status line and headers", id="headers"),
        pytest.param(_CHUNKED + b"5\r\nhello\r\n", b"1;pad=" + b"a" * 30, "body", id="chunk-size"),
        pytest.param(_CHUNKED, b"1\r\nx\r\n" * 10, "body", id="chunked-body"),
        pytest.param(_CHUNKED + b"5\r\nhello\r\n0\r\n", b"X-Pad: " + b"a" * 30, "body", id="trailer"),
        pytest.param(_OK + b"Content-Length: 30\r\n\r\n", b"x" * 30, "body", id="body"),
    ],
)
def test_trickling_origin_meets_one_deadline(origin, fast, slow, stage):
    origin.routes["/slow.png"] = trickle(fast, slow)
    started = time.monotonic()
    with pytest.raises(UnavailableError) as raised:
        _fetch(origin.url("/slow.png"), download_timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"the download held on for {elapsed:.1f} s"
    assert "longer than download_timeout=1 seconds" in str(raised.value)
    assert f"{stage} from 127.0.0.1" in str(raised.value)


class _TricklingTLS(socketserver.ThreadingTCPServer):
    """Answers a TLS ClientHello with a record header for 16 KiB, then a byte per 0.6 s."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _TrickleHandler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()


class _TrickleHandler(socketserver.BaseRequestHandler):
    def handle(self):
        trickle(b"\x16\x03\x03\x40\x00", b"\x02" * 30)(_Raw(self.request))


class _Raw:
    """Enough of a request handler for ``trickle`` over a bare socket."""

    def __init__(self, sock):
        self.wfile = sock.makefile("wb", buffering=0)

    close_connection = True


def test_trickled_tls_handshake_meets_the_deadline():
    server = _TricklingTLS()
    try:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="timed out in the TLS handshake with 127.0.0.1"):
            _fetch(f"https://127.0.0.1:{server.server_address[1]}/a.png", download_timeout=1)
        assert time.monotonic() - started < 2
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tls_origin(tmp_path, monkeypatch):
    """An Origin over TLS with a certificate for ``localhost`` only, which downloads trust."""
    # cryptography comes with moto[server], which the test extra installs.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    monkeypatch.setattr(http_sources, "_tls_context", lambda: client_context)
    server = Origin(server_context)
    yield server
    server.close()


def test_https_download_and_certificate_check(tls_origin):
    tls_origin.routes["/photo.png"] = body(b"the bytes")
    assert _fetch(tls_origin.url("/photo.png", host="localhost").replace("http:", "https:")) == b"the bytes"
    with pytest.raises(SourceError, match="127.0.0.1's certificate is not valid"):
        _fetch(tls_origin.url("/photo.png").replace("http:", "https:"))


@pytest.mark.parametrize(
    "fast, slow, stage",
    [
        pytest.param(_OK, b"X-Pad: " + b"a" * 30, "status line and headers", id="headers"),
        pytest.param(_CHUNKED + b"5\r\nhello\r\n", b"1;pad=" + b"a" * 30, "body", id="chunk-size"),
    ],
)
def test_trickling_tls_origin_meets_one_deadline(tls_origin, fast, slow, stage):
    tls_origin.routes["/slow.png"] = trickle(fast, slow)
    url = tls_origin.url("/slow.png", host="localhost").replace("http:", "https:")
    started = time.monotonic()
    with pytest.raises(UnavailableError, match=f"timed out reading the {stage} from localhost"):
        _fetch(url, download_timeout=1)
    assert time.monotonic() - started < 2


def test_deadline_spans_redirect_hops(origin):
    # Each hop answers within the deadline on its own; together they do not.
    def slow_redirect(handler):
        time.sleep(0.4)
        redirect("/hop")(handler)

    origin.routes["/hop"] = slow_redirect
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="longer than download_timeout=1 seconds"):
        _fetch(origin.url("/hop"), download_timeout=1, max_redirects=10)
    assert time.monotonic() - started < 2


def test_body_cut_short_is_unavailable(origin):
    origin.routes["/short.png"] = trickle(_OK + b"Content-Length: 1000\r\n\r\n" + b"x" * 10, b"")
    with pytest.raises(UnavailableError, match="broke off after 10 of 1000 bytes"):
        _fetch(origin.url("/short.png"))


def test_unicode_path_end_to_end(make_site, origin):
    origin.routes["/caf%C3%A9.png"] = body(_png(60, 40))
    site = make_site(allowed_hosts="127.0.0.1", allow_private_addresses=True)
    reference = origin.url("/café.png")
    representation = site.registrar.register(f"{reference} | fit 30x30")
    assert (representation.width, representation.height) == (30, 20)
    response = site.get(representation.url)
    if response.status_int == 301:
        response = site.get(response.location)
    assert response.status_int == 200
    assert decode(response.body).size == (30, 20)
    assert origin.hits == ["/caf%C3%A9.png", "/caf%C3%A9.png"]
    # The source stays what was written: its version (and so the result's name) is the IRI.
    assert _sources().resolve(reference).version() == reference


@pytest.mark.parametrize(
    "path, sent",
    [
        pytest.param("/photo.png?name=crème brûlée", None, id="space-refused"),
        pytest.param("/photo.png?name=crème", "/photo.png?name=cr%C3%A8me", id="query"),
        pytest.param("/photo.png?name=日本", "/photo.png?name=%E6%97%A5%E6%9C%AC", id="query-cjk"),
        pytest.param(
            "/photo.png?name=%C3%A8&b=é", "/photo.png?name=%C3%A8&b=%C3%A9", id="already-encoded-kept"
        ),
        pytest.param("/photo.png?v=1#çà", "/photo.png?v=1", id="fragment-not-sent"),
        pytest.param("/photo.png?x=\U0001f600", "/photo.png?x=%F0%9F%98%80", id="astral"),
    ],
)
def test_unicode_query_downloads(origin, path, sent):
    origin.routes["/photo.png"] = body(b"the bytes")
    if sent is None:
        with pytest.raises(SourceError, match="spaces"):
            _fetch(origin.url(path))
        return
    assert _fetch(origin.url(path)) == b"the bytes"
    assert origin.hits == [sent]


@pytest.mark.parametrize(
    "location, sent",
    [
        pytest.param(b"/caf\xc3\xa9.png", "/caf%C3%A9.png", id="utf-8"),
        pytest.param(b"/caf\xe9.png", "/caf%E9.png", id="latin-1"),
        pytest.param(b"/caf\xc3\xa9.png?q=\xc3\xa9", "/caf%C3%A9.png?q=%C3%A9", id="utf-8-query"),
        pytest.param(b"http://localhost:{port}/caf\xc3\xa9.png", "/caf%C3%A9.png", id="utf-8-absolute"),
    ],
)
def test_non_ascii_location_is_followed(origin, location, sent):
    origin.routes[sent.split("?", 1)[0]] = body(b"the bytes")
    # http.server writes header values as Latin-1: this sends ``location``'s bytes unchanged.
    origin.routes["/a"] = redirect(location.replace(b"{port}", str(origin.port).encode()).decode("latin-1"))
    assert _fetch(origin.url("/a")) == b"the bytes"
    assert origin.hits == ["/a", sent]


@pytest.mark.parametrize(
    "location, reason",
    [
        pytest.param(b"http://caf\xe9.example/a.png", "no valid host name", id="latin-1-host"),
        pytest.param(
            b"http://caf\xc3\xa9.example/a.png",
            "'xn--caf-dma.example' is not on allowed_hosts",
            id="idna-host",
        ),
        pytest.param(b"/a\xc2\x85b.png", "control characters", id="c1-control"),
        pytest.param(b"http://[caf\xc3\xa9/a.png", "Invalid IPv6 URL", id="unclosed-bracket"),
    ],
)
def test_non_ascii_location_refused(origin, location, reason):
    origin.routes["/a"] = redirect(location.decode("latin-1"))
    with pytest.raises(SourceError, match=reason):
        _fetch(origin.url("/a"))


@pytest.mark.parametrize(
    "url, reason",
    [
        pytest.param("https://b\u00fccher.example/a.png", None, id="idna"),
        pytest.param("https://B\u00dcCHER.example/a.png", None, id="idna-upper-case"),
        pytest.param("https://\u00e9" * 1 + "\u00e9" * 70 + ".example/a.png", "IDNA", id="label-too-long"),
        pytest.param("https://exa\u2028mple.example/a.png", "IDNA", id="prohibited"),
        pytest.param("https://example.com\uff0fevil.com/a.png", "NFKC", id="nfkc-slash"),
        pytest.param("https://b\u00fccher.example/a\x85.png", "control characters", id="c1-control"),
        pytest.param("https://b\u00fccher.example/\ud800.png", "not valid Unicode", id="lone-surrogate"),
    ],
)
def test_iri_hosts(url, reason):
    sources = _sources(allowed_hosts="xn--bcher-kva.example,example.com")
    if reason is None:
        assert sources.resolve(url).version() == url
        return
    with pytest.raises(SourceError, match=reason):
        sources.resolve(url)


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
def test_forked_process_downloads(origin):
    # A pre-forking server may fork after the parent has downloaded (and so looked up) once.
    origin.routes["/photo.png"] = body(b"the bytes")
    assert _fetch(origin.url("/photo.png")) == b"the bytes"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports through the pipe and never returns into pytest
        try:
            os.write(write_end, _fetch(origin.url("/photo.png"), download_timeout=2))
        except BaseException as error:
            os.write(write_end, repr(error).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        reaped = False
        try:
            deadline = time.monotonic() + 10
            while not reaped and time.monotonic() < deadline:
                time.sleep(0.05)
                reaped = os.waitpid(pid, os.WNOHANG) != (0, 0)
        finally:
            if not reaped:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        assert reader.read() == b"the bytes"


def test_unreachable_is_unavailable():
    with pytest.raises(UnavailableError, match="cannot connect"):
        _fetch(f"http://127.0.0.1:{free_port()}/a.png")


@pytest.mark.parametrize(
    "status, error",
    [(404, SourceNotFoundError), (410, SourceNotFoundError), (403, SourceError), (503, UnavailableError)],
)
def test_statuses(origin, status, error):
    origin.routes["/a.png"] = body(b"no", status=status)
    with pytest.raises(error, match=f"answered {status}"):
        _fetch(origin.url("/a.png"))


def test_origin_404_is_recorded(make_site, origin):
    origin.routes["/photo.png"] = body(_png())
    site = make_site(allowed_hosts="127.0.0.1", allow_private_addresses=True)
    text = f"{origin.url('/photo.png')} | fit 30x30"
    url = site.registrar.register(text).url
    del origin.routes["/photo.png"]
    response = site.get(url)
    assert response.status_int == 404
    assert "does not exist (127.0.0.1 answered 404)" in response.text
    hits = len(origin.hits)
    assert site.get(url).status_int == 404
    assert len(origin.hits) == hits  # answered from the record, not fetched again


def test_origin_500_is_transient(make_site, origin):
    origin.routes["/photo.png"] = body(_png())
    site = make_site(allowed_hosts="127.0.0.1", allow_private_addresses=True)
    text = f"{origin.url('/photo.png')} | fit 30x30"
    url = site.registrar.register(text).url
    origin.routes["/photo.png"] = body(b"down", status=500)
    response = site.get(url)
    assert response.status_int == 503
    assert "Retry-After" in response.headers
    assert "answered 500" in response.text
    job = site.store.get(url.rsplit("/", 1)[1].split(".")[0])
    assert job.state == "failed" and job.retry_at is not None  # to be tried again, not recorded for good
