"""The error boundary every stage of making a result runs inside.

A decoder meets far more broken files than its authors did, and its library raises
whatever it raises: ``TypeError`` from a TIFF directory, ``KeyError`` from a frame,
``UnicodeDecodeError`` from a video's title, ``SyntaxError`` from a PNG chunk. One
boundary per stage turns all of it into this project's errors, so that a source that
breaks a library is refused with a reason, once and for good, and never becomes an
error page or a job retried for ever.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import FileProcError, LimitError, ProcessingError

log = logging.getLogger(__name__)

# Library messages name the file object or a path: "<_io.BufferedReader name='/srv/a.png'>".
_FILE_OBJECT = re.compile(r"\s*<_io\.\w+ name=.*?>")
_REASON_LENGTH = 160
_ASIDE = re.compile(r"\s*\(([^()]*)\)")


@contextlib.contextmanager
def failure(message: str, handle: BinaryIO | None = None) -> Iterator[None]:
    """The error boundary of one stage (reading a header, decoding, a step, encoding).

    Errors of this project pass through. Anything else a library raises becomes a
    :class:`ProcessingError` reading ``message`` (a sentence such as "source 'a.tif' is a
    TIFF file that could not be decoded") followed by the library's own reason, on one
    line, cut short and without file names; running out of memory is a
    :class:`LimitError` instead.
    """
    try:
        yield
    except FileProcError:
        raise
    except MemoryError:
        raise LimitError(
            f"{message}: it needs more memory than this server gives one job (max_job_memory)"
        ) from None
    except Exception as error:
        log.info("fileproc_wsgi: %s", message, exc_info=True)
        raise ProcessingError(f"{message} ({reason(error, handle)})") from None


def reason(error: BaseException, handle: BinaryIO | None = None) -> str:
    """A library's message about ``error``, safe to show: one line, short, no server path."""
    text = _FILE_OBJECT.sub("", str(error))
    name = getattr(handle, "name", None)
    if isinstance(name, str) and name:
        text = text.replace(name, "the file")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    # Shown inside parentheses: the library's own become a clause ("truncated, 8 bytes
    # not processed"), so a reason never ends in "))".
    text = _ASIDE.sub(r", \1", text).strip(" .")
    if len(text) > _REASON_LENGTH:
        text = text[: _REASON_LENGTH - 1].rstrip() + "…"
    return text or f"{type(error).__name__}, without a message"
