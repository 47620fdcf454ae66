"""Registering over HTTP: template hosts that do not share a database with the processor.

``RemoteRegistrar("https://img.example.com/_fp", secret=...)`` has the same
``register``/``register_many``/``batch`` as :class:`~fileproc_wsgi.registrar.Registrar`;
it sends the texts to ``POST <prefix>/register`` on the processing server, which
registers them with its own sources and database and answers with their
representations. URLs come back absolute, pointing at the processing server.

The wire format, signed with the shared ``secret``::

    POST /_fp/register
    X-Fileproc-Timestamp: 1790000000
    X-Fileproc-Signature: hex(HMAC-SHA256(secret, b"1790000000." + body))
    Content-Type: application/json

    {"texts": ["photo.jpg | fit 400x300", ...]}
    -> {"results": [{"checksum": ..., "url": ..., "width": ..., ...} | {"error": {...}}, ...]}

The server refuses a signature that does not match (compared in constant time) and a
timestamp further than :data:`REPLAY_WINDOW` seconds from its clock. A replay inside the
window is harmless: registering is idempotent and answers only what the caller already had.

The client keeps one persistent connection per thread, remembers answers for ``ttl``
seconds (the server, not the client, sees the source change), an answer still pointing
at ``/_fp/`` for at most :data:`PENDING_TTL` (the server prints the result's own URL once
it is made, and the page should too), and after a failure to
reach the server fails fast for a few seconds, so a page with fifty thumbnails does not
wait fifty timeouts while the processing server is down.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import urljoin, urlsplit

from . import errors
from .cache import SharedCache
from .errors import FileProcError, InstructionError, RequestError, SignatureError, UnavailableError
from .representation import Representation

log = logging.getLogger(__name__)

REPLAY_WINDOW = 300
PENDING_TTL = 5.0
MAX_TEXTS = 1000
TIMESTAMP_HEADER = "X-Fileproc-Timestamp"
SIGNATURE_HEADER = "X-Fileproc-Signature"
_FIELDS = ("checksum", "url", "width", "height", "content_type")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``timestamp.body`` under ``secret``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, *, now: float) -> None:
    """Raise SignatureError unless ``signature`` signs ``body`` at a fresh ``timestamp``."""
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    # isascii: str.isdigit accepts digits such as "¹²³" that int() then refuses.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be whole seconds since the epoch")
    signature = signature.strip().lower()
    # compare_digest refuses non-ASCII text with a TypeError: such a signature is simply wrong.
    if not signature.isascii() or not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise SignatureError("bad signature: the request was not signed with this server's secret")
    # Checked after the signature, so an unsigned caller learns nothing about our clock.
    if abs(now - int(timestamp)) > REPLAY_WINDOW:
        raise SignatureError(
            f"stale timestamp: more than {REPLAY_WINDOW} s from the server's clock "
            "(a replay, or the clocks disagree)"
        )


def texts_of(body: bytes) -> list[str]:
    """The texts of a register request body; RequestError naming what is wrong."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestError(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise RequestError("the body is not JSON this server reads: nested too deeply") from None
    texts = payload.get("texts") if isinstance(payload, dict) else None
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise RequestError('expected a JSON object {"texts": [<instruction text>, ...]}')
    if not 0 < len(texts) <= MAX_TEXTS:
        raise RequestError(f"expected between 1 and {MAX_TEXTS} texts, got {len(texts)}")
    return texts


def answer(registrar, texts: Sequence[str]) -> bytes:
    """Register ``texts`` (new ones in one transaction) and encode the per-text results."""
    results: list[dict] = []
    with registrar.batch():
        for text in texts:
            try:
                representation = registrar.register(text)
            except UnavailableError:
                raise  # the whole request is a 503, not one failed text
            except FileProcError as error:
                results.append({"error": _encode_error(error)})
            else:
                results.append({name: getattr(representation, name) for name in _FIELDS})
    return json.dumps({"results": results}, separators=(",", ":")).encode()


def _encode_error(error: FileProcError) -> dict:
    """:func:`errors.describe`, with an InstructionError's position also at the top level
    and no empty ``attributes``: the shape clients before ``attributes`` read."""
    encoded = errors.describe(error)
    if not encoded["attributes"]:
        del encoded["attributes"]
    if isinstance(error, InstructionError):
        encoded.update(problem=error.problem, line=error.line, column=error.column, step=error.step)
    return encoded


def _decode_error(encoded: dict, server: str) -> FileProcError:
    """The server's error as its own class (:func:`errors.restore`: no constructor is
    called, so classes that take more than a message come back whole)."""
    attributes = encoded.get("attributes")
    if not isinstance(attributes, dict):  # an older server: only InstructionError had fields
        attributes = {name: encoded[name] for name in _LEGACY_FIELDS if name in encoded}
    message = str(encoded.get("message") or "refused")
    error = errors.restore({"type": encoded.get("type"), "message": message, "attributes": attributes})
    if type(error) is FileProcError or isinstance(error, UnavailableError):
        # Unknown here, or an outage (which the server answers with a 503, never per text):
        # say whose it is rather than pass it off as a local one.
        return FileProcError(f"registrar at {server}: {message}")
    return error


_LEGACY_FIELDS = ("problem", "line", "column", "step")


class RemoteRegistrar:
    """Registers instruction texts on a processing server; safe to share between threads.

    ``url`` is the server's mount point (``https://img.example.com/_fp``), ``secret`` the
    one configured there. ``cache`` is an optional shared cache (``get``/``set``, such as
    a Django cache) that lets a fleet of template hosts share answers for ``ttl`` seconds.
    Errors are the ones a local registrar raises (``InstructionError`` with its line, a
    missing source ...), plus ``UnavailableError`` when the server cannot be reached.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str,
        cache=None,
        timeout: float = 5.0,
        ttl: float = 60.0,
        cache_size: int = 4096,
        retry_after: float = 5.0,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.ConfigError(f"registrar_url: expected an http(s) URL, got {url!r}")
        if not secret:
            raise errors.ConfigError("RemoteRegistrar needs the processing server's secret")
        self.url = url.rstrip("/")
        self.cache = None if cache is None else SharedCache(cache)
        self._secret = secret
        self._endpoint = parts.path.rstrip("/") + "/register"
        secure = parts.scheme == "https"
        self._connection_class = http.client.HTTPSConnection if secure else http.client.HTTPConnection
        self._address = (parts.hostname, parts.port)
        self._timeout = timeout
        self._ttl = ttl
        self._cache_size = cache_size
        self._retry_after = retry_after
        self._answers: OrderedDict[str, tuple[float, Representation]] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._down_until = 0.0

    def register(self, text: str) -> Representation:
        return self.register_many([text])[0]

    def register_many(self, texts: Iterable[str]) -> list[Representation]:
        """Representations of several texts, the unknown ones asked for in one request."""
        texts = list(texts)
        now = time.monotonic()
        found: dict[str, Representation] = {}
        for text in texts:
            representation = self._remembered(text, now)
            if representation is not None:
                found[text] = representation
        missing = list(dict.fromkeys(text for text in texts if text not in found))
        if missing:
            results = self._post(missing)
            if len(results) != len(missing):
                raise UnavailableError(
                    f"registrar at {self.url} answered {len(results)} results for {len(missing)} texts"
                )
            for text, result in zip(missing, results, strict=True):
                if "error" in result:
                    raise _decode_error(result["error"], self.url)
                representation = self._representation(result)
                found[text] = representation
                self._remember(text, representation, now)
        return [found[text] for text in texts]

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        # Answers arrive with each request, so there is nothing to defer.
        yield

    def close(self) -> None:
        """Close the connections of every thread (each opens a new one when next used)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _remembered(self, text: str, now: float) -> Representation | None:
        entry = self._answers.get(text)
        if entry is not None and entry[0] > now:
            return entry[1]
        if self.cache is not None:
            shared = self.cache.get(_cache_key(text))
            if shared is not None and shared[0] > time.time():
                representation = Representation(*shared[1])
                self._keep(text, representation, now, min(self._ttl, shared[0] - time.time()))
                return representation
        return None

    def _remember(self, text: str, representation: Representation, now: float) -> None:
        ttl = self._ttl_of(representation)
        self._keep(text, representation, now, ttl)
        if self.cache is not None:
            fields = tuple(getattr(representation, name) for name in _FIELDS)
            self.cache.set(_cache_key(text), (time.time() + ttl, fields))

    def _ttl_of(self, representation: Representation) -> float:
        """How long an answer is kept: shorter while it points at the server's ``/_fp/``
        URL, which becomes the result's own URL once the server has made it."""
        if representation.url.startswith(f"{self.url}/{representation.checksum}."):
            return min(self._ttl, PENDING_TTL)
        return self._ttl

    def _keep(self, text: str, representation: Representation, now: float, ttl: float) -> None:
        with self._lock:
            self._answers[text] = (now + ttl, representation)
            self._answers.move_to_end(text)
            while len(self._answers) > self._cache_size:
                self._answers.popitem(last=False)

    def _representation(self, result: dict) -> Representation:
        try:
            values = {name: result[name] for name in _FIELDS}
        except KeyError as error:
            raise UnavailableError(f"registrar at {self.url} sent a result without {error}") from None
        values["url"] = urljoin(self.url + "/", values["url"])
        return Representation(**values)

    def _post(self, texts: list[str]) -> list[dict]:
        if time.monotonic() < self._down_until:
            raise UnavailableError(f"registrar at {self.url} is unreachable; not retrying for a few seconds")
        body = json.dumps({"texts": texts}, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        try:
            status, reply = self._exchange(body, headers)
        except (OSError, http.client.HTTPException) as error:
            self._down_until = time.monotonic() + self._retry_after
            raise UnavailableError(f"registrar at {self.url} is unreachable: {error}") from None
        if status == 200:
            try:
                return json.loads(reply)["results"]
            except (ValueError, KeyError, TypeError):
                raise UnavailableError(f"registrar at {self.url} did not answer with results") from None
        text = reply.decode("utf-8", "replace").strip()
        message = text.splitlines()[0] if text else f"HTTP {status}"
        if status == 401:
            raise SignatureError(f"registrar at {self.url} refused the request: {message}")
        if status == 404:
            raise errors.ConfigError(
                f"registrar at {self.url} has no register endpoint (is its secret set?): {message}"
            )
        raise UnavailableError(f"registrar at {self.url} answered {status}: {message}")

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST on this thread's persistent connection, reconnecting once if it went stale."""
        for attempt in (1, 2):
            connection = getattr(self._local, "connection", None)
            fresh = connection is None or connection not in self._connections  # closed meanwhile
            if connection is None or fresh:
                connection = self._connection_class(*self._address, timeout=self._timeout)
                self._local.connection = connection
                with self._lock:
                    self._connections.append(connection)
            try:
                connection.request("POST", self._endpoint, body=body, headers=headers)
                response = connection.getresponse()
                reply = response.read()
            except (OSError, http.client.HTTPException):
                self._forget(connection)
                # A kept-alive connection the server has since closed fails on first use:
                # that is worth one retry on a new connection, a fresh one failing is not.
                if fresh or attempt == 2:
                    raise
                continue
            if response.will_close:
                self._forget(connection)
            return response.status, reply
        raise AssertionError("unreachable")

    def _forget(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock, contextlib.suppress(ValueError):
            self._connections.remove(connection)


def _cache_key(text: str) -> str:
    return "fileproc:remote:" + hashlib.sha256(text.encode()).hexdigest()
