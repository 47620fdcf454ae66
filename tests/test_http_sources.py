"""http(s) sources against a real HTTP server on 127.0.0.1: allowed hosts, address checks,
redirects, the byte cap and the download deadline.

The server runs in a thread of the test process; the sites opt in to loopback with
``allow_private_addresses=True``, which is exactly what the tests of the refusals leave off.
"""

from __future__ import annotations

import http.server
import io
import threading
import time

import pytest

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import LimitError, SourceError, SourceNotFoundError, UnavailableError
from fileproc_wsgi.http_sources import refused_address
from fileproc_wsgi.sources import Sources
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

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
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
