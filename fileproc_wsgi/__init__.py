"""fileproc_wsgi: thumbnails of images registered at render time, made on first request.

The public names are imported lazily, so that ``import fileproc_wsgi.instructions``
(what a template host needs) does not pull in the database and HTTP layers::

    from fileproc_wsgi import Config, FileProcessor, Registrar, InstructionError
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each is imported when used
    from .block import Rendition
    from .config import Config
    from .errors import (
        ConfigError,
        FileProcError,
        InstructionError,
        LimitError,
        NotRegisteredError,
        ProcessingError,
        SourceError,
        SourceNotFoundError,
        UnavailableError,
        UnsupportedSourceError,
    )
    from .instructions import Instructions, parse
    from .middleware import FileProcessor
    from .registrar import Registrar, registrar_for
    from .remote import RemoteRegistrar
    from .representation import Representation
    from .store import InstructionStore

_EXPORTS = {
    "Config": "config",
    "FileProcessor": "middleware",
    "Registrar": "registrar",
    "RemoteRegistrar": "remote",
    "registrar_for": "registrar",
    "Rendition": "block",
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
__all__ = [
    "Config",
    "ConfigError",
    "FileProcError",
    "FileProcessor",
    "InstructionError",
    "InstructionStore",
    "Instructions",
    "LimitError",
    "NotRegisteredError",
    "ProcessingError",
    "Registrar",
    "RemoteRegistrar",
    "Rendition",
    "Representation",
    "SourceError",
    "SourceNotFoundError",
    "UnavailableError",
    "UnsupportedSourceError",
    "parse",
    "registrar_for",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fileproc_wsgi' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
