"""One frozen, validated configuration for every part of fileproc_wsgi.

A :class:`Config` is built from keyword arguments, from a mapping (Django's
``FILEPROCESSOR`` dict uses the same keys) with :meth:`Config.from_mapping`, or from
``FILEPROC_*`` environment variables with :meth:`Config.from_env`. Nothing is read at
import time, and an unknown key is an error that names it.

The embedded default needs no setting at all: a SQLite database and local results
under ``./.fileproc/``, and sources under the current directory. Relative paths are
made absolute when the Config is built, so a later ``chdir`` changes nothing; a source
root naming a storage (``"django:default"``) is kept as written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .errors import ConfigError, LimitError

ENV_PREFIX = "FILEPROC_"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_ROOT_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_MIN_JOB_MEMORY = 512 * 1024 * 1024
# "django:default", "django:blog.Photo.image": a storage a module registered its kind for
# (fileproc_wsgi.sources.register_storage_kind). Two letters at least, so that "C:\media"
# stays a directory, and no "//", so that a URL is never mistaken for one.
_STORAGE_KIND = r"[a-z]{2,}"
_STORAGE_ROOT = re.compile(rf"^({_STORAGE_KIND}):(?!//)(.*)$", re.DOTALL)
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d+)?$")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings shared by the registrar, the middleware and the command line.

    Limits default to values that let ordinary photos through (a 48-megapixel phone
    picture, a 100 MB file) and stop decompression bombs; see docs/configuration.md's limits.
    :meth:`check_page` and :meth:`check_result_size` apply the ones a registration can
    already judge from the instructions and the source's header.
    """

    # SQLAlchemy URL of the store; empty: sqlite:///./.fileproc/fileproc.db of the working directory.
    # SQLite runs in WAL mode with a busy timeout; PostgreSQL through postgresql+psycopg://...
    database_url: str = ""
    # Root name to directory, or to a storage ("django:default").
    # FILEPROC_SOURCE_ROOTS=default=media,static=static, or JSON.
    source_roots: Mapping[str, str] = dataclasses.field(default_factory=lambda: {"default": "."})
    # Where results are stored: a directory (a path or file:///dir) or s3://bucket/prefix; empty:
    # ./.fileproc/results.
    storage: str = ""
    # Where stored results are reachable (point it at nginx or a CDN); empty: <prefix>/files/, served by
    # the middleware.
    public_url: str = ""
    # The URL path the middleware answers under.
    prefix: str = "/_fp"
    # Enables POST <prefix>/register and signs its requests (HMAC-SHA256); 16 characters or more.
    secret: str | None = None
    # Template hosts only: register on this processing server (https://img.example.com/_fp), signed with
    # secret.
    registrar_url: str | None = None
    # Hosts that http(s) sources may be fetched from (img.example.com, *.example.com, name:port), and the
    # exact names of buckets that s3:// sources may read; comma-separated in FILEPROC_ALLOWED_HOSTS.
    allowed_hosts: tuple[str, ...] = ()
    # http(s) sources: how long a download may take, how many redirects it may follow, and
    # whether hosts on loopback/private/link-local addresses may be fetched (tests only).
    download_timeout: float = 10.0
    # Redirects an http(s) download follows, each hop checked against allowed_hosts again.
    max_redirects: int = 3
    # Let http(s) sources resolve to loopback, private or link-local addresses (tests and trusted networks
    # only).
    allow_private_addresses: bool = False
    # S3 (storage "s3://bucket/prefix" and "s3://bucket/key" sources): an endpoint for
    # S3-compatible servers and a region; credentials come from the standard AWS_* variables
    # or files. presign_seconds > 0 answers with a presigned URL (private buckets).
    s3_endpoint_url: str = ""
    # The region of the S3 endpoint; empty: what boto3 resolves.
    s3_region: str = ""
    # With S3 storage: answer with a presigned URL valid this long, behind a temporary redirect with no-
    # store (private buckets); 0: public URLs.
    presign_seconds: int = 0
    # 301, 302, 303, 307 or 308; temporary ones are sent with Cache-Control: no-cache.
    redirect_status: int = 301
    # Answer with the result's bytes instead of a redirect to it.
    serve_results: bool = False
    # Once a result is made, print its storage URL rather than the /_fp/ URL (no redirect
    # for the browser); never for presigned URLs or with serve_results.
    final_urls: bool = True
    # Threads per process that start making a page's new registrations as soon as the page
    # has written them, before the browser asks; None: one per CPU core this process may
    # use (at most max_concurrent_jobs), 0: only on request.
    background_jobs: int | None = None
    # Seconds a request waits for a result another worker is making, or for a core, before a 503.
    wait_timeout: float = 10.0
    # Seconds a claim on a job lasts before another worker may take it over; must be longer than
    # max_processing_seconds.
    lease_seconds: float = 60.0
    # The Retry-After sent with a 503, in seconds (a failure waiting for its retry sends the time left).
    retry_after: int = 5
    # Registrations remembered in-process per registrar.
    cache_size: int = 4096
    # Seconds a warm registration trusts that its source file is unchanged before one stat checks again
    # (0: every render); what purge or gc --delete removed is forgotten by every process within it.
    source_check_interval: float = 1.0
    # The same for a source that asking costs a request (a storage root that is not plain
    # files, s3:// sources): a warm render must not wait on the network every second.
    remote_source_check_interval: float = 60.0
    # Bytes of a source, refused before the file is read (above any camera JPEG or phone HEIC).
    max_source_bytes: int = 100 * 1024 * 1024
    # Pixels of a source, checked on its header (and on the header of the page asked for), so that a
    # decompression bomb never allocates them; a 48-megapixel phone photo passes.
    max_source_pixels: int = 50_000_000
    # Pixels of a result and of every step on the way that enlarges the image (a 5000x5000 result); stops
    # upscale from asking for gigabytes.
    max_output_pixels: int = 25_000_000
    # The longest side of a result in pixels: any srcset width fits (a 4K screen at 2x is 7680 px), thin
    # strips and sizes that encoders refuse do not.
    max_output_side: int = 8192
    # Frames of an animation kept animated, and the furthest page N read: reaching page N walks the frames
    # before it, so this bounds the walk whatever the file claims.
    max_source_frames: int = 1000
    # An animation kept animated decodes every frame and holds every result frame until
    # it is written: the pixels of all its frames, source and result each, are held to this.
    # At 10^8 the worst case, a result at full size, takes ~3.5 s and ~200 MiB as GIF,
    # ~10.5 s and ~400 MiB as WebP (bench/animations.py --at-limit): inside the job limits.
    max_animation_pixels: int = 100_000_000
    # Seconds per job; with isolate_jobs the worker process is killed when they are up, even inside one
    # native call. The first two overruns are retried (503), the third is permanent (422). Must be shorter
    # than lease_seconds.
    max_processing_seconds: float = 30.0
    # Jobs under way at once in one process, of which one per CPU core runs; a request that would start
    # one more gets a 503 at once, never queued. Above a browser's 6 connections per host.
    max_concurrent_jobs: int = 8
    # Bytes of a POST <prefix>/register body, refused before it is read when the length is stated.
    max_register_bytes: int = 1024 * 1024
    # Jobs run in worker processes (fileproc_wsgi.pool): hard time limit, memory limit per
    # job, a crash costs one job. False runs them in the web process (see docs/guarantees.md).
    isolate_jobs: bool = True
    # Address space per job (RLIMIT_AS in its worker, at least 512 MiB): an allocation past it refuses the
    # job (422) instead of waking the host's OOM killer.
    max_job_memory: int = 2 * 1024 * 1024 * 1024
    # A worker process is replaced after this many jobs (and when it holds more than 512 MiB after one),
    # so that a library's leaks do not grow for ever.
    worker_max_jobs: int = 1000
    # Office documents (fileproc_wsgi.engines.office): the PDFs LibreOffice made, kept per
    # source content on each processing host so that page 2 does not convert again (oldest
    # evicted past document_cache_bytes). Under ./.fileproc/ like the other defaults.
    document_cache: str = ""
    # Past this, the least recently used PDFs of document_cache are removed.
    document_cache_bytes: int = 1024 * 1024 * 1024
    # Prometheus metrics (fileproc_wsgi.metrics, the "metrics" extra): the URL path the
    # middleware answers them at ("/metrics", "/_fp/metrics"); "" serves none. Only to
    # clients whose REMOTE_ADDR is one of metrics_allowed (addresses or networks,
    # "10.0.0.0/8"); any other gets a 404, as if the path were not there.
    metrics_path: str = ""
    # The client addresses or networks ("10.0.0.0/8") that metrics_path answers; any other gets a 404.
    metrics_allowed: tuple[str, ...] = ("127.0.0.1", "::1")

    def __post_init__(self) -> None:
        prefix = "/" + self.prefix.strip("/")
        if prefix == "/" or not re.fullmatch(r"/[A-Za-z0-9._~/-]+", prefix):
            raise ConfigError(f"prefix: expected a URL path such as '/_fp', got {self.prefix!r}")
        self._set("prefix", prefix)

        base = os.path.abspath(".fileproc")
        database_url = self.database_url or f"sqlite:///{os.path.join(base, 'fileproc.db')}"
        self._set("database_url", absolute_database_url(database_url, os.getcwd()))
        self._set("storage", storage_url(self.storage or os.path.join(base, "results"), os.getcwd()))
        self._set("document_cache", os.path.abspath(self.document_cache or os.path.join(base, "documents")))
        public_url = self.public_url or f"{prefix}/files/"
        self._set("public_url", public_url if public_url.endswith("/") else public_url + "/")

        roots = dict(self.source_roots)
        for name, directory in roots.items():
            if not isinstance(name, str) or not _ROOT_NAME.match(name):
                raise ConfigError(
                    f"source_roots: root name {name!r} must be lower-case letters, digits, '-' or '_'"
                )
            if not isinstance(directory, (str, os.PathLike)) or not str(directory):
                raise ConfigError(f"source_roots: root {name!r} needs a directory, got {directory!r}")
            storage = storage_root(directory) if isinstance(directory, str) else None
            if storage is not None:
                if not storage[1].strip():
                    raise ConfigError(
                        f"source_roots: root {name!r} names a {storage[0]} storage without saying "
                        f"which (e.g. '{storage[0]}:default'), got {directory!r}"
                    )
                continue  # opened by whatever registered its kind, when first used: kept verbatim
            roots[name] = os.path.abspath(os.fspath(directory))
        self._set("source_roots", MappingProxyType(roots))

        hosts = self.allowed_hosts.split(",") if isinstance(self.allowed_hosts, str) else self.allowed_hosts
        hosts = tuple(h.strip().lower() for h in hosts if h.strip())
        for host in hosts:
            if not _HOST.match(host):
                raise ConfigError(f"allowed_hosts: {host!r} is not a host name or '*.domain'")
        self._set("allowed_hosts", hosts)

        if self.metrics_path and not re.fullmatch(r"/[A-Za-z0-9._~/-]+", self.metrics_path):
            raise ConfigError(
                f"metrics_path: expected a URL path such as '/metrics', got {self.metrics_path!r}"
            )
        clients = self.metrics_allowed
        clients = clients.split(",") if isinstance(clients, str) else clients
        try:
            networks = tuple(str(ipaddress.ip_network(c.strip(), strict=False)) for c in clients if c.strip())
        except (ValueError, TypeError, AttributeError):
            raise ConfigError(
                f"metrics_allowed: expected IP addresses or networks ('10.0.0.0/8'), got {clients!r}"
            ) from None
        self._set("metrics_allowed", networks)

        if self.redirect_status not in REDIRECT_STATUSES:
            raise ConfigError(
                f"redirect_status: expected one of {REDIRECT_STATUSES}, got {self.redirect_status!r}"
            )
        if self.registrar_url is not None:
            if not re.match(r"^https?://[^/\s]+(/\S*)?$", self.registrar_url):
                raise ConfigError(
                    f"registrar_url: expected the processing server's URL such as "
                    f"'https://img.example.com/_fp', got {self.registrar_url!r}"
                )
            if not self.secret:
                raise ConfigError("registrar_url: remote registration needs the shared secret too")
        if self.secret is not None and len(self.secret) < 16:
            raise ConfigError("secret: use at least 16 characters (it signs register requests)")
        for name in ("wait_timeout", "lease_seconds", "max_processing_seconds"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"{name}: expected seconds between 0 and 3600, got {getattr(self, name)!r}")
        if self.max_processing_seconds >= self.lease_seconds:
            # A job past its lease may be claimed by another worker: both would do the work.
            raise ConfigError(
                f"max_processing_seconds: must be shorter than lease_seconds ({self.lease_seconds:g}), "
                f"so that a worker finishes inside its lease; got {self.max_processing_seconds:g}"
            )
        if not 0 < self.download_timeout <= 600:
            raise ConfigError(
                f"download_timeout: expected seconds between 0 and 600, got {self.download_timeout!r}"
            )
        if isinstance(self.presign_seconds, bool) or not 0 <= self.presign_seconds <= 7 * 24 * 3600:
            raise ConfigError(
                f"presign_seconds: expected 0 (public URLs) up to 604800, got {self.presign_seconds!r}"
            )
        if self.s3_endpoint_url and not re.match(r"^https?://[^/\s]+", self.s3_endpoint_url):
            raise ConfigError(f"s3_endpoint_url: expected an http(s) URL, got {self.s3_endpoint_url!r}")
        for name in ("source_check_interval", "remote_source_check_interval"):
            if not 0 <= getattr(self, name) <= 3600:
                raise ConfigError(f"{name}: expected seconds between 0 and 3600, got {getattr(self, name)!r}")
        for name in (
            "retry_after",
            "cache_size",
            "max_source_bytes",
            "max_source_pixels",
            "max_output_pixels",
            "max_output_side",
            "max_source_frames",
            "max_animation_pixels",
            "max_concurrent_jobs",
            "max_register_bytes",
            "document_cache_bytes",
            "max_redirects",
            "worker_max_jobs",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a positive whole number, got {value!r}")
        memory = self.max_job_memory
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < _MIN_JOB_MEMORY:
            raise ConfigError(
                f"max_job_memory: expected bytes, at least {_MIN_JOB_MEMORY} (a worker's libraries alone "
                f"take about 300 MiB of address space), got {self.max_job_memory!r}"
            )
        for name in ("isolate_jobs", "final_urls", "serve_results"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        jobs = self.background_jobs
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0):
            raise ConfigError(
                f"background_jobs: expected a whole number of threads, 0 for none, got {jobs!r}"
            )

    def check_page(self, page: int | None) -> None:
        """Raise :class:`LimitError` for a ``page N`` beyond ``max_source_frames``.

        Reaching page N of an animation or a multi-page TIFF walks the N - 1 frames before
        it; this bounds that walk whatever the file declares.
        """
        if page is not None and page > self.max_source_frames:
            raise LimitError(
                f"page {page} is beyond max_source_frames={self.max_source_frames}: "
                "no page or frame further into a source is read"
            )

    def check_source_pixels(self, subject: str, width: int, height: int, *, rendered: bool = False) -> None:
        """Raise :class:`LimitError` for a source picture of ``width`` x ``height`` over
        ``max_source_pixels``. ``subject`` names it ("source 'a.heic'", "page 2 of
        'a.tiff'"); ``rendered`` says the size is the one a vector source (PDF page, SVG)
        would be drawn at, not one the file holds, so the message says which."""
        if width * height > self.max_source_pixels:
            verb = "would render at" if rendered else "has"
            raise LimitError(
                f"{subject} {verb} {width}x{height} = {width * height} pixels, "
                f"more than max_source_pixels={self.max_source_pixels}"
            )

    def check_animation(
        self, subject: str, frames: int, width: int, height: int, *, at_least: bool = False
    ) -> None:
        """Raise :class:`LimitError` for an animation kept animated of ``frames`` frames
        of ``width`` x ``height`` (``at_least``: counted so far, the file may hold more)
        over ``max_source_frames`` or ``max_animation_pixels``. ``subject`` names it in the
        message: "source 'a.gif'", "the animated result of 'a.gif'"."""
        counted = f"{frames} frames or more" if at_least else f"{frames} frames"
        if frames > self.max_source_frames:
            raise LimitError(
                f"{subject} has {counted}, more than max_source_frames={self.max_source_frames} "
                "(a result that animates decodes every frame)"
            )
        if frames * width * height > self.max_animation_pixels:
            raise LimitError(
                f"{subject} has {counted} of {width}x{height} = {frames * width * height} pixels, "
                f"more than max_animation_pixels={self.max_animation_pixels}"
            )

    def check_result_size(self, width: int, height: int, *, step: str | None = None) -> None:
        """Raise :class:`LimitError` for a result (or, naming ``step``, the image a step
        would make) over ``max_output_pixels`` or ``max_output_side``."""
        if step is None:
            pixels = f"the result would have {width}x{height} pixels"
            side = f"the result would be {width}x{height}"
        else:
            pixels = side = f"step {step!r} would make an image of {width}x{height}"
        if width * height > self.max_output_pixels:
            raise LimitError(f"{pixels}, more than max_output_pixels={self.max_output_pixels}")
        if max(width, height) > self.max_output_side:
            raise LimitError(f"{side}, a side longer than max_output_side={self.max_output_side}")

    def check_plan(self, plan: Sequence[tuple[str, int, int]] | None) -> None:
        """Apply :meth:`check_result_size` to every step of an ``Instructions.plan``: an
        intermediate image is held in memory as surely as the result (``resize
        16384x16384 | resize 64x64`` is a gigabyte on the way to a thumbnail)."""
        if not plan:
            return
        # Only a step that enlarges the image (more pixels, or a longer side) can break a
        # limit the step before it kept: the source itself, and a quarter turn of it, are
        # held to max_source_pixels, not to the output limits.
        for (_, before_w, before_h), (word, width, height) in itertools.pairwise(plan[:-1]):
            if width * height > before_w * before_h or max(width, height) > max(before_w, before_h):
                self.check_result_size(width, height, step=word)
        self.check_result_size(*plan[-1][1:])

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """Build from a dict such as Django's ``FILEPROCESSOR``; keys are field names."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key.lower() not in known:
                raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(sorted(known))}")
        try:
            return cls(**{key.lower(): value for key, value in values.items()})
        except TypeError as error:  # a value of the wrong type reaching a comparison
            raise ConfigError(str(error)) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build from ``FILEPROC_<FIELD>`` variables; ``overrides`` win over them.

        ``FILEPROC_SOURCE_ROOTS`` is ``name=dir,name=dir`` or a JSON object;
        ``FILEPROC_ALLOWED_HOSTS`` is comma-separated. An unknown ``FILEPROC_*``
        variable is an error, so a typo cannot silently fall back to a default.
        """
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for variable, text in environ.items():
            if not variable.startswith(ENV_PREFIX):
                continue
            name = variable[len(ENV_PREFIX) :].lower()
            if name not in fields:
                raise ConfigError(
                    f"unknown environment variable {variable}; known: "
                    + ", ".join(ENV_PREFIX + n.upper() for n in sorted(fields))
                )
            values[name] = parse_setting(variable, fields[name], text)
        values.update(overrides)
        return cls.from_mapping(values)


def storage_root(value: str) -> tuple[str, str] | None:
    """``(kind, argument)`` of a source root naming a storage (``"django:default"``), or
    None for a directory."""
    match = _STORAGE_ROOT.match(value)
    return (match.group(1), match.group(2)) if match else None


def is_storage_kind(kind: object) -> bool:
    """Whether ``kind`` can name a storage in a source root (``"django"``)."""
    return isinstance(kind, str) and re.fullmatch(_STORAGE_KIND, kind) is not None


def absolute_database_url(url: str, base: str) -> str:
    """``sqlite:///x.db`` made absolute against ``base``; every other URL as it is.

    SQLite opens a relative path against the working directory of the moment it
    connects: resolved when the Config is built, it names one file however the process
    moves (and a settings file resolves it against its own directory).
    """
    scheme, separator, rest = url.partition(":///")
    if not separator or scheme.partition("+")[0] != "sqlite":
        return url
    database, question, query = rest.partition("?")
    if not database or database.startswith("/") or database == ":memory:" or database.startswith("file:"):
        return url
    return f"{scheme}:///{os.path.join(base, database)}{question}{query}"


def storage_url(value: str, base: str) -> str:
    """The ``storage`` setting as a ``file://`` URL of an absolute directory (a relative
    one resolved against ``base``), or the ``s3://`` URL it is; raises ConfigError."""
    if value.startswith("s3://"):
        return value
    path = value[len("file://") :] if value.startswith("file://") else value
    if not path or "://" in path:
        # Another scheme would otherwise become a directory named after it ("ftp:/...").
        raise ConfigError(
            f"storage: expected 'file:///dir', a directory or 's3://bucket/prefix', got {value!r}"
        )
    return "file://" + os.path.abspath(os.path.join(base, path))


def parse_setting(variable: str, field: dataclasses.Field, text: str) -> Any:
    """The value of ``field`` written as text (an environment variable, a framework's
    string setting); ``variable`` names where it came from in the ConfigError."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    try:
        if kind == "int":
            return int(text)
        if kind == "int | None":
            return int(text) if text.strip() else None
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes", "on")
        if kind.startswith("Mapping"):
            if text.lstrip().startswith("{"):
                return json.loads(text)
            pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
            return {name.strip(): directory.strip() for name, directory in pairs}
        if kind.startswith("tuple"):
            return tuple(item for item in text.split(",") if item.strip())
        if kind == "str | None":
            return text or None
        return text
    except ValueError:
        raise ConfigError(f"{variable}: cannot read {text!r} as {kind}") from None
