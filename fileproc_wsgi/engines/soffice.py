"""LibreOffice in a box: one document converted to PDF, isolated, timed, and kept.

A document from a stranger is converted by a LibreOffice process of its own, started for
that document and gone when it is done:

- **Its own profile and home.** A private ``UserInstallation`` copied from a template made
  once per cache directory (a profile's first start costs a restart), and ``HOME`` and
  ``TMPDIR`` in the same throw-away directory: no document sees another's settings or
  files, and none can change what the next one meets.
- **No macros, no fetching.** The template's ``registrymodifications.xcu`` sets macro
  security to its highest level with macro execution disabled, and blocks links to
  untrusted places (linked images, OLE links); the import filter is pinned to the kind the
  content showed, without VBA, so a ``.docm``'s project is never even loaded. Where the
  kernel allows it the process also runs in a network namespace of its own (``unshare
  -rn``): nothing to connect to at all.
- **A hard time limit.** The process runs in a session of its own and is killed with its
  whole process group (SIGKILL) at the deadline; it also dies with the process that
  started it (``setpriv --pdeathsig``), so a worker killed by the pool takes it along.
  It inherits the worker's ``RLIMIT_AS``: a conversion peaks at about 470 MiB of address
  space here, well inside ``max_job_memory``.
- **Output kept bounded.** Its standard output and error go to a file of which only the
  last line is ever read, for a refusal's reason.

The PDF is kept in ``Config.document_cache`` under the SHA-256 of the source's bytes, so
``page 2`` of the same version renders from it without a second conversion; files are
written whole (temporary name, then rename), one conversion per document at a time
across processes (an advisory lock), and the oldest are evicted past
:data:`CACHE_BYTES`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import ProcessingError, TimeLimitError

CACHE_BYTES = 1024 * 1024 * 1024
# Where LibreOffice lives when soffice is not on PATH (Debian/Ubuntu, the upstream
# packages, macOS).
_KNOWN = (
    "/usr/lib/libreoffice/program/soffice.bin",
    "/opt/libreoffice/program/soffice.bin",
    *sorted(glob.glob("/opt/libreoffice*/program/soffice.bin"), reverse=True),
    "/Applications/LibreOffice.app/Contents/MacOS/soffice",
)
# Settings a fresh profile starts with: macro security "very high" with execution off, and
# no loading of what a document links to from an untrusted place.
_SETTINGS = (
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "3"),
    ("/org.openoffice.Office.Common/Security/Scripting", "DisableMacrosExecution", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "BlockUntrustedRefererLinks", "true"),
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "2"),  # 2: never update links
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "1"),  # 1: never (Calc counts otherwise)
)
# A profile's first start ends with exit status 81, "restart me", once it has set itself up.
_RESTART = 81
_TEMPLATE_SECONDS = 60.0
_LOCK_POLL = 0.05


@functools.cache
def find() -> str | None:
    """The LibreOffice program to run (``soffice.bin``, not its shell wrapper, so that the
    process killed is the one converting), or None when LibreOffice is not installed."""
    wrapper = shutil.which("soffice") or shutil.which("libreoffice")
    candidates = []
    if wrapper:
        program = os.path.dirname(os.path.realpath(wrapper))
        candidates.append(os.path.join(program, "soffice.bin"))
    candidates.extend(_KNOWN)
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


@functools.cache
def _sandbox() -> tuple[str, ...]:
    """The command prefix that gives the conversion no network and ties it to its parent:
    as much of ``setpriv --pdeathsig KILL`` and ``unshare -rn`` as this system allows."""
    prefix: list[str] = []
    setpriv, unshare = shutil.which("setpriv"), shutil.which("unshare")
    if setpriv and _works([setpriv, "--pdeathsig", "KILL", "--", "true"]):
        prefix += [setpriv, "--pdeathsig", "KILL", "--"]
    if unshare and _works([unshare, "-rn", "--", "true"]):
        prefix += [unshare, "-rn", "--"]
    return tuple(prefix)


def _works(command: list[str]) -> bool:
    try:
        return (
            subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def network_isolated() -> bool:
    """Whether conversions run without any network (a namespace of their own)."""
    return any(os.path.basename(part) == "unshare" for part in _sandbox())


def digest(handle: BinaryIO) -> str:
    """The SHA-256 of the source's bytes, the key its PDF is kept under."""
    handle.seek(0)
    hasher = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        hasher.update(block)
    handle.seek(0)
    return hasher.hexdigest()


@contextlib.contextmanager
def pdf_of(
    handle: BinaryIO, kind: str, import_filter: str, reference: str, directory: str, deadline: float
) -> Iterator[BinaryIO]:
    """The PDF of the document in ``handle``, open for reading: from the cache in
    ``directory``, or converted now (by at most one process at a time) and kept there."""
    key = f"{digest(handle)}-{kind.lower()}"
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, key + ".pdf")
    with _locked(os.path.join(directory, key + ".lock"), deadline, reference):
        cached = _open_cached(path)
        if cached is None:
            _convert(handle, kind, import_filter, reference, directory, path, deadline)
            cached = _open_cached(path)
            if cached is None:  # evicted at once by another process: the cache is too small
                raise ProcessingError(f"the PDF made of {reference!r} was evicted before it was read")
    with cached:
        yield cached


def _open_cached(path: str) -> BinaryIO | None:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - returned open
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # a hit is a use: eviction goes by last use
    return handle


@contextlib.contextmanager
def _locked(path: str, deadline: float, reference: str) -> Iterator[None]:
    """An advisory lock on one document's conversion, waited for until ``deadline``."""
    with open(path, "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeLimitError(
                        f"{reference!r} was still being converted by another process at the time limit"
                    ) from None
                time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _convert(
    handle: BinaryIO,
    kind: str,
    import_filter: str,
    reference: str,
    directory: str,
    path: str,
    deadline: float,
) -> None:
    program = find()
    if program is None:
        raise ProcessingError(f"{reference!r} needs LibreOffice, which this server lacks")
    template = _template(program, directory)
    with tempfile.TemporaryDirectory(prefix="fileproc-office-") as scratch:
        profile = os.path.join(scratch, "profile")
        shutil.copytree(template, profile, symlinks=True)
        source = os.path.join(scratch, f"document.{kind.lower()}")
        handle.seek(0)
        with open(source, "wb") as file:
            shutil.copyfileobj(handle, file)
        handle.seek(0)
        out = os.path.join(scratch, "out")
        os.mkdir(out)
        status, said = _run(
            [
                program,
                *_FLAGS,
                f"-env:UserInstallation=file://{profile}",
                f"--infilter={import_filter}",
                "--convert-to",
                "pdf",
                "--outdir",
                out,
                source,
            ],
            scratch,
            deadline,
            reference,
        )
        made = os.path.join(out, "document.pdf")
        if status != 0 or not os.path.isfile(made) or os.path.getsize(made) == 0:
            why = f"exit status {status}" if status else "no PDF came out"
            raise ProcessingError(
                f"LibreOffice could not convert {reference!r} ({why}{': ' + said if said else ''})"
            )
        temporary = f"{path}.{os.getpid()}.tmp"
        shutil.copyfile(made, temporary)
        os.replace(temporary, path)
    evict(directory)


_FLAGS = ("--headless", "--invisible", "--norestore", "--nologo", "--nodefault", "--nolockcheck")


def _run(command: list[str], scratch: str, deadline: float, reference: str) -> tuple[int, str]:
    """Run one LibreOffice process until ``deadline``: ``(exit status, its last line)``."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": scratch,
        "TMPDIR": scratch,
        # The default page of a document that states none follows the locale's paper:
        # always the same one (A4; RTF's own default is Letter), whatever the host's.
        "LC_ALL": "C.UTF-8",
        "SAL_USE_VCLPLUGIN": "svp",
    }
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _late(reference)
    with open(os.path.join(scratch, "output"), "w+b") as output:
        process = subprocess.Popen(
            [*_sandbox(), *command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=scratch,
            start_new_session=True,
        )
        try:
            status = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill(process)
            raise _late(reference) from None
        except BaseException:
            _kill(process)
            raise
        # Its whole group goes, in case it left a helper behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return status, _last_line(output)


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _late(reference: str) -> TimeLimitError:
    return TimeLimitError(
        f"LibreOffice did not finish converting {reference!r} within max_processing_seconds; stopped"
    )


def _last_line(output: BinaryIO) -> str:
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - 2048))
    lines = [line.strip() for line in output.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def _template(program: str, directory: str) -> str:
    """A profile set up once with :data:`_SETTINGS`, under ``directory``, made by one
    process and renamed into place whole."""
    template = os.path.join(directory, "profile-" + hashlib.sha256(program.encode()).hexdigest()[:12])
    if os.path.isdir(template):
        return template
    with tempfile.TemporaryDirectory(prefix="profile-", dir=directory) as scratch:
        profile = os.path.join(scratch, "profile")
        os.makedirs(os.path.join(profile, "user"))
        with open(os.path.join(profile, "user", "registrymodifications.xcu"), "w", encoding="utf-8") as file:
            file.write(_registry())
        deadline = time.monotonic() + _TEMPLATE_SECONDS
        for _ in range(3):
            status, said = _run(
                [program, *_FLAGS, f"-env:UserInstallation=file://{profile}", "--terminate_after_init"],
                scratch,
                deadline,
                "a new LibreOffice profile",
            )
            if status == 0:
                break
            if status != _RESTART:
                raise ProcessingError(f"LibreOffice could not start (exit status {status}: {said})")
        with contextlib.suppress(OSError):  # another process was first: its profile is as good
            os.rename(profile, template)
    return template


def _registry() -> str:
    items = "".join(
        f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse">'
        f"<value>{value}</value></prop></item>\n"
        for path, name, value in _SETTINGS
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f"{items}</oor:items>\n"
    )


def evict(directory: str, limit: int = CACHE_BYTES) -> None:
    """Delete the least recently used PDFs in ``directory`` until the rest fit in ``limit``
    bytes (a lock file goes with its PDF: at worst a document is converted twice)."""
    kept = []
    for entry in os.scandir(directory):
        if entry.name.endswith(".pdf"):
            with contextlib.suppress(FileNotFoundError):
                status = entry.stat()
                kept.append((status.st_mtime, status.st_size, entry.path))
    total = sum(size for _, size, _ in kept)
    for _, size, path in sorted(kept):
        if total <= limit:
            break
        with contextlib.suppress(FileNotFoundError):  # another process evicted it first
            os.remove(path)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path[: -len(".pdf")] + ".lock")
        total -= size
