"""fileproc_wsgi: thumbnails of images registered at render time, made on first request.

The public names are imported lazily, so that ``import fileproc_wsgi.instructions``
(what a template host needs) does not pull in the database and HTTP layers::

    from fileproc_wsgi import Config, FileProcessor, Registrar, InstructionError
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config",
    "FileProcessor": "middleware",
    "Registrar": "registrar",
    "RemoteRegistrar": "remote",
    "registrar_for": "registrar",
    "Rendition": "tags",
    "Representation": "representation",
    "InstructionStore": "store",
    "Instructions": "instructions",
    "parse": "instructions",
    "FileProcError": "errors",
    "InstructionError": "errors",
    "ConfigError": "errors",
    "SourceError": "errors",
    "SourceNotFoundError": "errors",
    "UnsupportedSourceError": "errors",
    "LimitError": "errors",
    "ProcessingError": "errors",
    "NotRegisteredError": "errors",
    "UnavailableError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fileproc_wsgi' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
