"""A native library that an engine imports only where it decodes.

A web process whose jobs run in workers registers sources without loading PDFium, FFmpeg
or ImageMagick: whether one is installed is answered from the import path alone, and the
library is imported the first time a worker (or a process that chose no isolation) needs
it. A library that is found but then fails to import (a broken build, a missing system
library under it) counts as absent from then on, so the job is refused as one whose
library is missing (and retried), never as a broken source.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


class NativeLibrary:
    """The package ``name`` and its submodules ``parts``, imported together on first use."""

    def __init__(self, name: str, *parts: str) -> None:
        self.name = name
        self.parts = parts
        self._module: ModuleType | None = None
        self._failed = False

    def installed(self) -> bool:
        """Found on the import path (never importing it), unless importing it has failed."""
        if self._failed:
            return False
        if self._module is not None:
            return True
        try:
            return importlib.util.find_spec(self.name) is not None
        except (ImportError, ValueError):  # ValueError: sys.modules holds None for it
            return False

    def loaded(self) -> bool:
        """Whether it has been imported in this process."""
        return self._module is not None

    def load(self) -> None:
        """Import it now if it imports at all (a worker, before its first job)."""
        if self.installed():
            try:
                self.get()
            except (ImportError, OSError):
                pass  # installed() says so from now on

    def get(self) -> ModuleType:
        """The package, its ``parts`` imported; raises ImportError (or OSError, for a
        shared library that does not load) when it cannot be."""
        if self._module is None:
            try:
                module = importlib.import_module(self.name)
                for part in self.parts:
                    importlib.import_module(f"{self.name}.{part}")
            except (ImportError, OSError):
                self._failed = True
                raise
            self._module = module
        return self._module
