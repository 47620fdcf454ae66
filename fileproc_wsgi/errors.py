"""The one exception family of fileproc_wsgi.

Every error a user can cause is a :class:`FileProcError`. Each subclass carries the
HTTP status the middleware answers with, so errors are mapped to responses in exactly
one place (``FileProcessor._error_response``) and no traceback ever reaches a client.
"""

from __future__ import annotations


class FileProcError(Exception):
    """Base of every error raised by fileproc_wsgi on purpose.

    ``status`` is the HTTP status a client sees; ``str(error)`` is a one-line reason
    that is safe to show (it names what was wrong, never a server path or traceback).
    """

    status = 500


class ConfigError(FileProcError, ValueError):
    """A configuration value is missing, unknown or invalid."""


class InstructionError(FileProcError, ValueError):
    """Instruction text that does not parse, with where and what was expected.

    ``line`` and ``column`` are 1-based positions in the text that was registered;
    ``step`` is the operation word (or ``None`` when the text has no step at all);
    ``where`` names the template when the text came from one (``line`` is then the
    template's line).
    """

    status = 400

    def __init__(
        self, problem: str, *, line: int, column: int, step: str | None = None, where: str | None = None
    ):
        self.problem = problem
        self.line = line
        self.column = column
        self.step = step
        self.where = where
        position = f"line {line}, column {column}"
        if step:
            position += f", step {step!r}"
        if where:
            position = f"{where}, {position}"
        super().__init__(f"{position}: {problem}")


class SourceError(FileProcError):
    """A source reference is refused (outside its root, unknown root, ...)."""

    status = 400


class SourceNotFoundError(SourceError):
    """The source a reference names does not exist (or is not a regular file)."""

    status = 404


class UnsupportedSourceError(FileProcError):
    """The source's bytes are not a format this installation may decode."""

    status = 422


class MissingLibraryError(UnsupportedSourceError):
    """A source in a format this server reads, whose library (or program) is not installed
    on this host.

    A fact about the host, not the source: registration refuses it like any unsupported
    source (the template's empty branch), but processing records it as a transient
    failure (503, retried with the store's backoff), so installing the library, or
    another host that has it, makes the URL work without ``fileproc retry``.
    """


class LimitError(FileProcError):
    """A configured limit (bytes, pixels, side, frames, time) was exceeded."""

    status = 422


class TimeLimitError(LimitError):
    """A job ran past ``max_processing_seconds``.

    Unlike the other limits this one depends on the machine's load as well as on the
    source, so the processor retries it, with backoff, before recording it as permanent.
    """


class ProcessingError(FileProcError):
    """The source could not be turned into a result (corrupt data, impossible step)."""

    status = 422


class NotRegisteredError(FileProcError):
    """No instructions are registered under the requested checksum."""

    status = 404


class LeaseLostError(FileProcError):
    """A worker tried to finish a job whose claim has passed to another worker."""

    status = 409


class UnavailableError(FileProcError):
    """A dependency (database, storage) or the result is not available right now.

    ``retry_after`` is the number of seconds a client should wait before asking again.
    ``detail`` is what the backend said (a driver's message, an endpoint): it is logged
    and printed by the command line, never sent in a response.
    """

    status = 503

    def __init__(self, message: str, *, retry_after: int = 5, detail: str | None = None):
        self.retry_after = retry_after
        self.detail = detail
        super().__init__(message)


class RequestError(FileProcError):
    """A request to ``<prefix>/register`` that is malformed (not JSON, wrong shape)."""

    status = 400


class SignatureError(FileProcError):
    """A ``register`` request whose signature or timestamp is missing, wrong or stale."""

    status = 401


class RequestTooLargeError(FileProcError):
    """A ``register`` request body over ``max_register_bytes``."""

    status = 413


# Failures that will give the same answer however often they are retried; processing
# takes MissingLibraryError out of them (a host's fault, retried like an outage).
PERMANENT_FAILURES = (SourceError, UnsupportedSourceError, LimitError, ProcessingError)


class RecordedFailureError(FileProcError):
    """A job that failed before: its stored reason, answered without trying again."""

    def __init__(self, reason: str, status: int):
        self.status = status
        super().__init__(reason)


def describe(error: FileProcError) -> dict:
    """A plain dict that :func:`restore` turns back into an equal error, for sending an
    error across a process or HTTP boundary (pickling would call constructors with the
    wrong arguments)."""
    return {"type": type(error).__name__, "message": str(error), "attributes": dict(vars(error))}


def restore(described: dict) -> FileProcError:
    """The error :func:`describe` described, of its own class where this module has it.

    The instance is made without calling its constructor, whose arguments differ between
    classes, and its attributes are set back; an unknown class becomes a plain
    :class:`FileProcError` with the same message.
    """
    kind = globals().get(str(described.get("type")))
    if not (isinstance(kind, type) and issubclass(kind, FileProcError)):
        kind = FileProcError
    error = kind.__new__(kind)
    Exception.__init__(error, str(described.get("message", "")))
    attributes = described.get("attributes")
    if isinstance(attributes, dict):
        for name, value in attributes.items():
            if isinstance(name, str) and not name.startswith("_"):
                setattr(error, name, value)
    return error
