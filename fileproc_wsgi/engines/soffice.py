"""LibreOffice in a box: one document converted to PDF, isolated, timed, and kept.

A document from a stranger is converted by a LibreOffice process of its own, started for
that document and gone when it is done:

- **Its own profile and home.** A private ``UserInstallation`` copied from a template made
  once per cache directory and settings (a profile's first start costs a restart), and
  ``HOME`` and ``TMPDIR`` in the same throw-away work directory: no document sees
  another's settings or files, and none can change what the next one meets.
- **No macros, no fetching.** The template's ``registrymodifications.xcu`` sets macro
  security to its highest level with macro execution disabled, and blocks links to
  untrusted places (linked images, OLE links); the import filter is pinned to the kind the
  content showed, without VBA, so a ``.docm``'s project is never even loaded. Where the
  kernel allows it the process also runs in a network namespace of its own (``unshare
  -rn``): nothing to connect to at all. Where it does not (user namespaces blocked,
  util-linux missing) documents are still converted, the settings being what keeps links
  unfetched, and :func:`network_isolated` says so (``engines.missing()`` reports
  ``libreoffice:network``, ``manage.py check`` shows it).
- **A hard time limit.** The process runs in a session of its own and is killed with its
  whole process group (SIGKILL) at the job's deadline; it also dies with the process that
  started it (``setpriv --pdeathsig``, set inside the namespace, where it survives), so a
  worker killed by the pool takes it along. It inherits the worker's ``RLIMIT_AS``: a
  conversion peaks at about 470 MiB of address space here, well inside ``max_job_memory``.
- **Nothing left behind.** Everything a conversion writes (the copy of the upload, the
  profile, LibreOffice's own temporary files) is in ``<document_cache>/work/<pid>-<random>``,
  removed when it ends; a worker killed mid-conversion cannot remove it, so every
  conversion first sweeps work directories whose process is gone or that are older than
  the time limit, and lock files left without their PDF.

The PDF is kept in ``Config.document_cache`` under the SHA-256 of the source's bytes, so
``page 2`` of the same version renders from it without a second conversion; it is moved
into place whole (``os.replace`` from the work directory, same file system), one
conversion per document at a time across processes (an advisory lock), and the least
recently used are evicted past ``Config.document_cache_bytes``.

Faults of the server (the cache directory unwritable or full, LibreOffice unable to start)
are :class:`~fileproc_wsgi.errors.UnavailableError`: retried with backoff, never recorded
against the document; the path and the system's words go to ``detail`` (the log), not to
the client.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import MissingLibraryError, ProcessingError, TimeLimitError, UnavailableError

CACHE_BYTES = 1024 * 1024 * 1024  # Config.document_cache_bytes' default
# Where LibreOffice lives when soffice is not on PATH (Debian/Ubuntu, the upstream
# packages, macOS).
_KNOWN = (
    "/usr/lib/libreoffice/program/soffice.bin",
    "/opt/libreoffice/program/soffice.bin",
    *sorted(glob.glob("/opt/libreoffice*/program/soffice.bin"), reverse=True),
    "/Applications/LibreOffice.app/Contents/MacOS/soffice",
)
# Where setpriv and unshare are when PATH is minimal (a service manager's, a container's).
_SYSTEM_BIN = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
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
_LOCK_POLL = 0.05
_WORK = "work"


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


def _tool(name: str) -> str | None:
    """A system tool on PATH, or in the system's own bin directories when PATH lacks them."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SYSTEM_BIN))


@functools.cache
def _sandbox() -> tuple[str, ...]:
    """The command prefix that gives the conversion no network and ties it to its parent:
    as much of ``unshare -rn`` and ``setpriv --pdeathsig KILL`` as this system allows.

    setpriv comes second: entering a user namespace changes the process's credentials,
    which clears a parent-death signal set before it."""
    prefix: list[str] = []
    setpriv, unshare, true = _tool("setpriv"), _tool("unshare"), _tool("true") or "true"
    if unshare and _works([unshare, "-rn", "--", true]):
        prefix += [unshare, "-rn", "--"]
    if setpriv and _works([*prefix, setpriv, "--pdeathsig", "KILL", "--", true]):
        prefix += [setpriv, "--pdeathsig", "KILL", "--"]
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
    handle: BinaryIO,
    kind: str,
    import_filter: str,
    subject: str,
    directory: str,
    deadline: float,
    *,
    limit: int = CACHE_BYTES,
    stale_seconds: float = 3600.0,
) -> Iterator[BinaryIO]:
    """The PDF of the document in ``handle``, open for reading: from the cache in
    ``directory``, or converted now (by at most one process at a time) and kept there.

    ``subject`` names the document in messages ("'a.docx', a DOCX document");
    ``deadline`` is the job's (a :func:`time.monotonic` time); ``limit`` bounds the
    cache's PDFs in bytes; a work directory older than ``stale_seconds`` is swept."""
    key = f"{digest(handle)}-{kind.lower()}"
    path = os.path.join(directory, key + ".pdf")
    lock = os.path.join(directory, key + ".lock")
    with _cache_faults(directory):
        os.makedirs(os.path.join(directory, _WORK), mode=0o700, exist_ok=True)
    converted = False
    with _locked(lock, directory, deadline, subject):
        cached = _open_cached(path)
        if cached is None:
            try:
                sweep(directory, stale_seconds)
                _convert(handle, kind, import_filter, subject, directory, path, deadline)
            except BaseException:
                # The lock of a conversion that failed guards nothing: it goes (a process
                # waiting on it then finds no PDF and tries itself, as it would have).
                with contextlib.suppress(OSError):
                    os.remove(lock)
                raise
            converted = True
            cached = _open_cached(path)
            if cached is None:  # evicted at once by another process: the cache is too small
                raise ProcessingError(f"the PDF made of {subject} was evicted before it was read")
    if converted:
        with _cache_faults(directory):
            evict(directory, limit)
    with cached:
        yield cached


@contextlib.contextmanager
def _cache_faults(directory: str) -> Iterator[None]:
    """The document cache's disk failing (full, read-only, not permitted, gone) is the
    server's fault: a 503 retried later, its path and reason for the log only."""
    try:
        yield
    except OSError as error:
        raise _unwritable(directory, error) from None


def _unwritable(directory: str, error: OSError) -> UnavailableError:
    return UnavailableError(
        "office documents cannot be converted right now: the server's document cache is not writable",
        detail=f"document_cache {directory}: {error}",
    )


def _open_cached(path: str) -> BinaryIO | None:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - returned open
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # a hit is a use: eviction goes by last use
    return handle


@contextlib.contextmanager
def _locked(path: str, directory: str, deadline: float, subject: str) -> Iterator[None]:
    """An advisory lock on one document's conversion, waited for until ``deadline``."""
    with _cache_faults(directory):
        lock = open(path, "a")  # noqa: SIM115 - closed below
    with lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeLimitError(
                        f"{subject} was still being converted by another process at the time limit"
                    ) from None
                time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sweep(directory: str, stale_seconds: float) -> list[str]:
    """Remove what killed conversions left in ``directory``: work directories whose
    process is gone or that are older than ``stale_seconds`` (a pid can be reused), and
    lock files without their PDF that nobody holds. Returns the names removed."""
    removed = []
    work = os.path.join(directory, _WORK)
    now = time.time()
    for entry in _entries(work):
        pid, _, _ = entry.name.partition("-")
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > stale_seconds
        except FileNotFoundError:
            continue
        if old or not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(f"{_WORK}/{entry.name}")
    for entry in _entries(directory):
        name = entry.name
        if not name.endswith(".lock") or os.path.exists(entry.path[: -len(".lock")] + ".pdf"):
            continue
        with contextlib.suppress(OSError), open(entry.path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a conversion under way
            os.remove(entry.path)
            removed.append(name)
    return removed


def _entries(directory: str) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextlib.contextmanager
def _work_directory(directory: str) -> Iterator[str]:
    """A private directory under ``<directory>/work``, named after this process so that a
    sweep can tell when it was left behind; removed on the way out."""
    with _cache_faults(directory):
        path = os.path.join(directory, _WORK, f"{os.getpid()}-{secrets.token_hex(6)}")
        os.mkdir(path, mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _convert(
    handle: BinaryIO,
    kind: str,
    import_filter: str,
    subject: str,
    directory: str,
    path: str,
    deadline: float,
) -> None:
    program = find()
    if program is None:
        raise MissingLibraryError(f"{subject} needs LibreOffice, which this server lacks")
    template = _template(program, directory, deadline)
    with _work_directory(directory) as scratch:
        profile = os.path.join(scratch, "profile")
        source = os.path.join(scratch, f"document.{kind.lower()}")
        out = os.path.join(scratch, "out")
        with _cache_faults(directory):
            shutil.copytree(template, profile, symlinks=True)
            handle.seek(0)
            with open(source, "wb") as file:
                shutil.copyfileobj(handle, file)
            handle.seek(0)
            os.mkdir(out)
        status, said = _run(
            [
                program,
                *_FLAGS,
                f"-env:UserInstallation={Path(profile).as_uri()}",
                f"--infilter={import_filter}",
                "--convert-to",
                "pdf",
                "--outdir",
                out,
                source,
            ],
            scratch,
            deadline,
            f"converting {subject}",
        )
        made = os.path.join(out, "document.pdf")
        if status != 0 or not os.path.isfile(made) or os.path.getsize(made) == 0:
            why = f"exit status {status}" if status else "no PDF came out"
            raise ProcessingError(
                f"LibreOffice could not convert {subject} ({why}{': ' + said if said else ''})"
            )
        with _cache_faults(directory):
            os.replace(made, path)


_FLAGS = ("--headless", "--invisible", "--norestore", "--nologo", "--nodefault", "--nolockcheck")


def _run(command: list[str], scratch: str, deadline: float, doing: str) -> tuple[int, str]:
    """Run one LibreOffice process until ``deadline``: ``(exit status, its last line)``.
    ``doing`` says what it was doing, for the message if it runs out of time."""
    environment = {
        "PATH": os.environ.get("PATH") or os.pathsep.join(_SYSTEM_BIN),
        "HOME": scratch,
        "TMPDIR": scratch,
        # The default page of a document that states none follows the locale's paper:
        # always the same one (A4; RTF's own default is Letter), whatever the host's.
        "LC_ALL": "C.UTF-8",
        "SAL_USE_VCLPLUGIN": "svp",
    }
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _late(doing)
    with open(os.path.join(scratch, "output"), "w+b") as output:
        try:
            process = subprocess.Popen(
                [*_sandbox(), *command],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=scratch,
                start_new_session=True,
            )
        except OSError as error:
            raise _cannot_start(str(error)) from None
        try:
            status = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill(process)
            raise _late(doing) from None
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


def _late(doing: str) -> TimeLimitError:
    return TimeLimitError(f"LibreOffice did not finish {doing} within max_processing_seconds; stopped")


def _cannot_start(detail: str) -> UnavailableError:
    return UnavailableError(
        "office documents cannot be converted right now: LibreOffice could not start", detail=detail
    )


def _last_line(output: BinaryIO) -> str:
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - 2048))
    lines = [line.strip() for line in output.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def template_name(program: str) -> str:
    """The profile template's directory name: a hash of the program and of the settings,
    so that changing either (a macro or link setting) makes a new one."""
    identity = "\0".join([program, _registry()])
    return "profile-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def _template(program: str, directory: str, deadline: float) -> str:
    """A profile set up once with :data:`_SETTINGS`, under ``directory``, made by one
    process (within the job's ``deadline``) and renamed into place whole."""
    template = os.path.join(directory, template_name(program))
    if os.path.isdir(template):
        return template
    with _work_directory(directory) as scratch:
        profile = os.path.join(scratch, "profile")
        with _cache_faults(directory):
            os.makedirs(os.path.join(profile, "user"))
            with open(
                os.path.join(profile, "user", "registrymodifications.xcu"), "w", encoding="utf-8"
            ) as file:
                file.write(_registry())
        for _ in range(3):
            status, said = _run(
                [
                    program,
                    *_FLAGS,
                    f"-env:UserInstallation={Path(profile).as_uri()}",
                    "--terminate_after_init",
                ],
                scratch,
                deadline,
                "setting up a new profile",
            )
            if status == 0:
                break
            if status != _RESTART:
                raise _cannot_start(f"setting up a profile: exit status {status}: {said}")
        else:
            raise _cannot_start(f"setting up a profile: still asking for a restart (status {_RESTART})")
        try:
            os.rename(profile, template)
        except OSError as error:
            # Another process was first: its profile is as good. Anything else is the disk.
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise _unwritable(directory, error) from None
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
    for entry in _entries(directory):
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
