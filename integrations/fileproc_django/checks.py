"""System checks (``manage.py check``, and every command that runs them).

Errors stop ``runserver`` and ``migrate``: settings that cannot build a Config. Warnings
point at what would make images silently disappear or be refused later: a source
directory that is missing or unreadable (a storage's own directory only once it exists,
since the storage makes it on the first upload), libraries this installation lacks (each
named with the pip extra or system package that provides it), and plugins that could not
be loaded. Each library has its own id, so a site that never shows PDFs can silence
``fileproc_django.W010`` in ``SILENCED_SYSTEM_CHECKS`` without hiding a missing
LibreOffice; plugins have ids of their own (W023 engines, W024 steps), since a broken
plugin is something to fix, not a kind of source to do without.
"""

from __future__ import annotations

import os

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from fileproc_wsgi import plugins
from fileproc_wsgi.config import storage_root
from fileproc_wsgi.errors import SourceNotFoundError

from . import storages
from .conf import cache_alias_from_settings, config_from_settings

# The check id of each library fileproc_wsgi.engines.missing() can report (its key);
# a key added there later is reported under W019 until it gets an id of its own. The ids
# are documented in docs/django.md and never change meaning: sites silence them by id.
ENGINE_CHECKS = {
    "pdf": "fileproc_django.W010",
    "video": "fileproc_django.W011",
    "imagemagick": "fileproc_django.W012",
    "heif": "fileproc_django.W013",
    "jpeg": "fileproc_django.W014",
    "webp": "fileproc_django.W015",
    "avif": "fileproc_django.W016",
    "littlecms": "fileproc_django.W017",
    "svg": "fileproc_django.W018",
    "raw": "fileproc_django.W020",
    "jxl": "fileproc_django.W021",
    "libreoffice": "fileproc_django.W022",
    "libreoffice:network": "fileproc_django.W025",
}
OTHER_LIBRARY_CHECK = "fileproc_django.W019"
ENGINE_PLUGIN_CHECK = "fileproc_django.W023"
STEP_PLUGIN_CHECK = "fileproc_django.W024"
_PROBE_NAME = ".fileproc-check"  # a name nobody stores: asking for it costs one lookup


def register() -> None:
    """Register the checks; called by the app's ``ready()``."""
    checks.register(check_settings)
    checks.register(check_source_roots)
    checks.register(check_engines)
    checks.register(check_storages_answer, deploy=True)


def check_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The settings build a Config (its defaults from Django's settings included) and
    name a configured cache."""
    errors: list[checks.CheckMessage] = []
    for read, check_id in (
        (config_from_settings, "fileproc_django.E001"),
        (cache_alias_from_settings, "fileproc_django.E002"),
    ):
        try:
            read()
        except ImproperlyConfigured as error:
            errors.append(checks.Error(str(error), id=getattr(error, "check_id", check_id)))
    return errors


def check_source_roots(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every source root can be read: a directory that exists, a storage that opens."""
    config = _config()
    if config is None or config.registrar_url:
        return []
    messages: list[checks.CheckMessage] = []
    for name, root in config.source_roots.items():
        where = f"source_roots[{name!r}]"
        if _storage_root(root):
            backend, message = _open_storage(root, where)
            if message is not None:
                messages.append(message)
                continue
            directory = backend.local_directory()
            # FileSystemStorage makes its location on the first save: a new project's
            # MEDIA_ROOT that is not there yet is not a fault.
            if directory is None or not os.path.lexists(directory):
                continue
            where = f"{where} ({backend.label})"
        else:
            directory = root
        message = _directory_problem(directory, where)
        if message is not None:
            messages.append(message)
    return messages


def check_storages_answer(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``check --deploy``: a storage that is not a local directory answers a lookup.

    Only on demand, because it is a round trip to the storage's server."""
    config = _config()
    if config is None or config.registrar_url:
        return []
    messages: list[checks.CheckMessage] = []
    for name, root in config.source_roots.items():
        if not _storage_root(root):
            continue
        where = f"source_roots[{name!r}]"
        backend, message = _open_storage(root, where)
        if backend is None or backend.local_directory() is not None:
            continue
        try:
            backend.version(_PROBE_NAME)
        except SourceNotFoundError:
            continue  # the storage answered
        except Exception as error:  # whatever the backend's library raises is the answer
            messages.append(
                checks.Warning(
                    f"{where}: {backend.label} did not answer a lookup: {_reason(error)}",
                    hint="Check the storage's credentials, endpoint and network access.",
                    id="fileproc_django.W004",
                )
            )
            continue
        messages.append(
            checks.Warning(
                f"{where}: {backend.label} said it has {_PROBE_NAME!r}, a name nobody stores",
                id="fileproc_django.W004",
            )
        )
    return messages


def check_engines(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Libraries this installation lacks, each with the extra or package that provides it
    (the engines' own list, so the check and a refused source say the same thing), and
    plugins that could not be loaded or lack a library of their own."""
    from fileproc_wsgi import engines

    messages: list[checks.CheckMessage] = []
    # Looked for, not imported: checks run in the process of runserver and other commands,
    # and importing some decoders changes what Pillow (and so ImageField) accepts there.
    # `fileproc check` imports them, in a process of its own.
    for missing in engines.missing():
        if missing.engine.startswith("plugin:"):
            messages.append(_plugin_message(missing))
            continue
        check_id = ENGINE_CHECKS.get(missing.engine, OTHER_LIBRARY_CHECK)
        if missing.engine == "libreoffice:network":  # converted all the same: a layer fewer
            messages.append(
                checks.Warning(
                    missing.why,
                    hint=(
                        "allow unprivileged user namespaces for the server (or a seccomp profile that "
                        f"permits unshare), or silence {check_id} once you accept it."
                    ),
                    id=check_id,
                )
            )
            continue
        install = "install what the message names"
        if missing.extra:
            install = f"pip install 'fileproc-wsgi[{missing.extra}]'"
        messages.append(
            checks.Warning(
                f"{missing.why}; such sources will be refused",
                hint=f"{install}; or silence {check_id} if this site has no such sources.",
                id=check_id,
            )
        )
    return messages


def _plugin_message(missing) -> checks.CheckMessage:
    """The warning for an engines.missing() entry about a plugin: ``plugin:<name>`` (it
    could not be loaded) or ``plugin:<name>:<library>`` (an engine plugin lacks it)."""
    _, name, *library = missing.engine.split(":", 2)
    problem = None if library else plugins.find_problem(name)
    if problem is not None:
        distribution = problem.distribution.rsplit(" ", 1)[0]  # "<name> <version>"
        if problem.group == plugins.OPERATIONS:
            return checks.Warning(
                f"{missing.why}; texts using its step are refused (the block's empty branch)",
                hint=f"Fix or uninstall {distribution} (pip uninstall {distribution}).",
                id=STEP_PLUGIN_CHECK,
            )
        return checks.Warning(
            f"{missing.why}; files only it reads are refused",
            hint=f"Fix or uninstall {distribution} (pip uninstall {distribution}).",
            id=ENGINE_PLUGIN_CHECK,
        )
    plugin = next((found for found in plugins.engines() if found.name == name), None)
    distribution = plugin.distribution if plugin is not None else f"the distribution of {name!r}"
    return checks.Warning(
        f"{missing.why}; files only it reads are refused",
        hint=f"Install what {distribution} needs (see its documentation), or uninstall {distribution}.",
        id=ENGINE_PLUGIN_CHECK,
    )


def _config():
    try:
        return config_from_settings()
    except ImproperlyConfigured:
        return None  # check_settings reports it


def _storage_root(root: str) -> bool:
    """Whether ``root`` names a Django storage; roots of other kinds are their provider's to check."""
    kind = storage_root(root)
    return kind is not None and kind[0] == storages.KIND


def _open_storage(root: str, where: str):
    """``(backend, None)``, or ``(None, an Error)`` saying why the storage cannot be opened."""
    found = storage_root(root)
    assert found is not None  # asked only about roots _storage_root accepted
    try:
        return storages.open_storage(found[1]), None
    except Exception as error:  # opening may raise anything the storage's own class raises
        return None, checks.Error(f"{where}: {_reason(error)}", id="fileproc_django.E005")


def _directory_problem(directory: str, where: str) -> checks.CheckMessage | None:
    if not os.path.exists(directory):
        return checks.Warning(
            f"{where}: the directory {directory} does not exist, so every source under it "
            "will be refused as missing",
            hint="Create it, or point the root at the directory that holds the sources.",
            id="fileproc_django.W001",
        )
    if not os.path.isdir(directory):
        return checks.Warning(f"{where}: {directory} is not a directory", id="fileproc_django.W002")
    if not os.access(directory, os.R_OK | os.X_OK):
        return checks.Warning(
            f"{where}: the directory {directory} cannot be read by this process (user id {os.geteuid()})",
            hint="Give the user the server runs as read and search permission on it.",
            id="fileproc_django.W003",
        )
    return None


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
