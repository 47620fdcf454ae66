"""Plugins: steps and source formats that other installed packages add.

A site adds a step (``watermark logo.png position=south-east``) or a source format
without forking, by installing a package that declares an entry point in one of two
groups (the contract is in ``docs/plugins.md``):

- ``fileproc_wsgi.operations``: the name is the step's word, the value a subclass of
  :class:`fileproc_wsgi.operations.PluginOperation`;
- ``fileproc_wsgi.engines``: the name is the engine's, the value a module (or object)
  with ``FORMATS``, ``sniff(head)``, ``available()``, ``probe`` and ``decode``, the
  contract of the built-in engines (:mod:`fileproc_wsgi.engines`), asked only about
  files no built-in engine decodes.

Entry points are read once per process, lazily: the first time a step word is not a
built-in one, a file is in no built-in format, or every engine is loaded (a worker
process does that before its first job, so a plugin's import never counts against a
job's time or memory). Reading them costs about 60 ms, which a site without plugins
pays only when a text or a file is wrong anyway. A plugin that cannot be loaded (its
import raises, its word is a built-in step's, it lacks part of the contract) is logged
(one warning line; its traceback at DEBUG) and listed by :func:`problems`, which
:func:`fileproc_wsgi.engines.missing` (so ``manage.py check``) reports; the built-ins
and every other plugin work as before. A plugin distribution found twice on the path (an
old ``.dist-info`` left beside the new) is logged with the version used. This module
imports only :mod:`.operations`: the grammar (:mod:`.instructions`) imports it, never the
other way round.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .operations import RESERVED_WORDS, PluginOperation

if TYPE_CHECKING:
    from importlib.metadata import Distribution

log = logging.getLogger(__name__)

OPERATIONS = "fileproc_wsgi.operations"
ENGINES = "fileproc_wsgi.engines"
_WORD = re.compile(r"[a-z][a-z0-9_-]*")
_ENGINE_PARTS = ("sniff", "available", "probe", "decode")


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One loaded plugin: its entry point's name and group, the distribution that
    declares it, and what the entry point names (the class or the engine module)."""

    name: str
    group: str
    distribution: str
    version: str
    # A PluginOperation subclass or an engine (a module, or any object with its parts):
    # checked against its group's contract when loaded, used by duck typing after that.
    target: Any

    @property
    def identity(self) -> str:
        """``'fileproc-watermark 0.1.0'``: what enters the checksum of texts using it."""
        return f"{self.distribution} {self.version}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A plugin that could not be used, and why (one line)."""

    name: str
    group: str
    distribution: str
    reason: str

    def __str__(self) -> str:
        kind = "step" if self.group == OPERATIONS else "engine"
        return f"the {kind} plugin {self.name!r} ({self.distribution}) could not be loaded: {self.reason}"


@dataclasses.dataclass(frozen=True)
class _Found:
    operations: Mapping[str, Plugin]
    engines: tuple[Plugin, ...]
    problems: tuple[Problem, ...]


_found: _Found | None = None
_lock = threading.Lock()


def operations() -> Mapping[str, Plugin]:
    """The step plugins by word (discovering them on first use)."""
    return _discover().operations


def find_operation(word: str) -> Plugin | None:
    """The step plugin for ``word`` (lowercase), or None."""
    return _discover().operations.get(word)


def engines() -> tuple[Plugin, ...]:
    """The engine plugins, in the order their entry points were found."""
    return _discover().engines


def problems() -> tuple[Problem, ...]:
    """Every plugin that could not be loaded, each with its reason."""
    return _discover().problems


def find_problem(name: str) -> Problem | None:
    """The problem of the plugin whose entry point is ``name``, or None."""
    return next((problem for problem in _discover().problems if problem.name == name), None)


def identity_of(operation: PluginOperation) -> str:
    """The distribution and version of the plugin that made ``operation``."""
    plugin = _discover().operations.get(operation.word)
    if plugin is None or plugin.target is not type(operation):
        # Made by hand rather than by parsing (a plugin's own tests): its module speaks for it.
        return f"{type(operation).__module__} (not installed)"
    return plugin.identity


def sniff(head: bytes) -> tuple[str, Plugin] | None:
    """``(format, plugin)`` for the first engine plugin that recognises ``head``."""
    for plugin in _discover().engines:
        try:
            found = plugin.target.sniff(head)
        except Exception as error:  # a plugin's bug must not make every unknown file an error page
            log.warning("fileproc_wsgi: engine plugin %r raised in sniff(): %s", plugin.name, _reason(error))
            log.debug("fileproc_wsgi: engine plugin %r in sniff()", plugin.name, exc_info=True)
            continue
        if found is not None and found in plugin.target.FORMATS:
            return found, plugin
    return None


def _discover() -> _Found:
    global _found
    found = _found
    if found is None:
        with _lock:
            if _found is None:
                _found = _load()
            found = _found
    return found


def _load() -> _Found:
    from importlib.metadata import entry_points

    operations: dict[str, Plugin] = {}
    engines: list[Plugin] = []
    problems: list[Problem] = []
    used: dict[str, Distribution] = {}
    for group in (OPERATIONS, ENGINES):
        for entry in entry_points(group=group):
            dist = entry.dist
            if dist is not None:
                used.setdefault(_normal(dist.name), dist)
            distribution = dist.name if dist is not None else "an unknown distribution"
            version = dist.version if dist is not None else "0"
            try:
                target = entry.load()
                if group == OPERATIONS:
                    _check_operation(entry.name, target, RESERVED_WORDS, operations)
                else:
                    _check_engine(target)
            except Exception as error:
                problem = Problem(entry.name, group, f"{distribution} {version}", _reason(error))
                # One line per plugin: `manage.py check` and every process start show it, and
                # the plugin's own traceback is for its author, at DEBUG.
                log.warning("fileproc_wsgi: %s", problem)
                if not isinstance(error, _ContractError):
                    log.debug("fileproc_wsgi: loading the plugin %r", entry.name, exc_info=True)
                problems.append(problem)
                continue
            plugin = Plugin(entry.name, group, distribution, version, target)
            if group == OPERATIONS:
                operations[target.word] = plugin
            else:
                engines.append(plugin)
    if used:
        _warn_installed_twice(used)
    return _Found(MappingProxyType(operations), tuple(engines), tuple(problems))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _warn_installed_twice(used: Mapping[str, Distribution]) -> None:
    """Warn about a plugin distribution installed more than once on the path.

    ``pip install --target DIR --upgrade`` leaves the old ``.dist-info`` beside the new
    one; importlib.metadata then takes the first it lists, which may be the old one, and
    its version is the one the checksums are salted with.
    """
    from importlib.metadata import distributions

    found: dict[str, dict[tuple[str, str], None]] = {}
    for dist in distributions():
        key = _normal(dist.metadata["Name"] or "")
        if key in used:
            # A folder on the path twice (as '' and by name) is one installation.
            where = os.path.realpath(str(dist.locate_file("")))
            found.setdefault(key, {})[(dist.version, where)] = None
    for key, dists in found.items():
        if len(dists) < 2:
            continue
        chosen = used[key]
        each = ", ".join(f"{version} in {where}" for version, where in dists)
        log.warning(
            "fileproc_wsgi: the plugin distribution %s is installed %d times (%s); using %s %s, "
            "the first found: remove the other .dist-info directories",
            chosen.name, len(dists), each, chosen.name, chosen.version,
        )  # fmt: skip


class _ContractError(Exception):
    """What a plugin declares breaks the contract (not a bug inside it)."""


def _check_operation(name: str, target: object, builtins: frozenset[str], taken: dict[str, Plugin]) -> None:
    if not (isinstance(target, type) and issubclass(target, PluginOperation)):
        raise _ContractError("it names no subclass of fileproc_wsgi.operations.PluginOperation")
    word = getattr(target, "word", None)
    if not isinstance(word, str) or not _WORD.fullmatch(word):
        raise _ContractError(f"its word {word!r} is not a lowercase word like 'watermark'")
    if word != name:
        raise _ContractError(f"its word {word!r} differs from its entry point's name {name!r}")
    if word in builtins:
        raise _ContractError(f"its word {word!r} is a built-in step's, which a plugin cannot replace")
    if word in taken:
        other = taken[word]
        raise _ContractError(f"its word {word!r} is taken by the plugin of {other.identity}")
    if not isinstance(target.usage, str) or not target.usage.startswith(word):
        raise _ContractError(f"its usage {target.usage!r} does not start with its word")
    least, most = target.least, target.most
    if not (isinstance(least, int) and isinstance(most, int) and 0 <= least <= most):
        raise _ContractError(f"least={target.least!r} and most={target.most!r} are no counts of arguments")
    for what in ("keys", "flags"):
        names = getattr(target, what)
        if not isinstance(names, tuple) or not all(isinstance(n, str) and _WORD.fullmatch(n) for n in names):
            raise _ContractError(f"its {what} {names!r} are not a tuple of lowercase words")
    if inspect.getattr_static(target, "parse") is inspect.getattr_static(PluginOperation, "parse"):
        raise _ContractError("it does not implement parse(arguments)")


def _check_engine(target: object) -> None:
    formats = getattr(target, "FORMATS", None)
    if (
        isinstance(formats, (str, bytes))
        or not formats
        or not all(isinstance(name, str) and name for name in formats)
    ):
        raise _ContractError("its FORMATS is not a non-empty collection of format names")
    lacking = [part for part in _ENGINE_PARTS if not callable(getattr(target, part, None))]
    if lacking:
        raise _ContractError(f"it lacks {', '.join(lacking)}")


def _reason(error: Exception) -> str:
    if isinstance(error, _ContractError):
        return str(error)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 200 else text[:199] + "…"
