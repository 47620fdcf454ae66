"""Registering instructions at render time: parse, checksum, store, represent.

``Registrar(config).register(text)`` never touches a pixel. It reads the source's header
(size, orientation, transparency) to predict the result's size and format, stores the
instructions under their checksum if they are new, and returns a
:class:`~fileproc_wsgi.representation.Representation`. A repeated registration of the
same text is answered from an in-process LRU after one ``stat`` of the source, which is
also how a replaced source gets a new checksum on the next render.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from . import engines
from .config import Config
from .encode import CONTENT_TYPES, EXTENSIONS, choose_format
from .instructions import Instructions, parse
from .operations import Background
from .representation import Representation
from .sources import LocalSource, Sources
from .store import InstructionStore


@dataclasses.dataclass(frozen=True)
class _Entry:
    source: LocalSource
    version: str
    representation: Representation


class Registrar:
    """Registers instruction texts for one configuration; safe to share between threads."""

    def __init__(self, config: Config | None = None, *, store: InstructionStore | None = None):
        self.config = config or Config()
        self.store = store or InstructionStore(self.config.database_url)
        self.sources = Sources(self.config.source_roots)
        self._url_base = self.config.prefix + "/"
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, text: str) -> Representation:
        """The representation of ``text``; raises InstructionError, SourceError or
        another FileProcError naming what is wrong."""
        entry = self._cache.get(text)
        if entry is not None and entry.source.version() == entry.version:
            try:
                self._cache.move_to_end(text)
            except KeyError:  # evicted by another thread meanwhile
                pass
            return entry.representation
        entry = self._register(parse(text))
        with self._lock:
            self._cache[text] = entry
            if len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return entry.representation

    def _register(self, instructions: Instructions) -> _Entry:
        source = self.sources.resolve(instructions.source)
        version = source.version()
        checksum = instructions.checksum(version)
        with source.open(self.config.max_source_bytes) as handle:
            info = engines.probe(handle, source.reference)
        flattened = any(isinstance(step, Background) for step in instructions.steps)
        output = choose_format(info.format, info.has_alpha and not flattened, instructions.output)
        size = instructions.predict_size(info.width, info.height)
        width, height = size if size else (None, None)
        self.store.add(
            checksum,
            instructions.canonical,
            source=instructions.source,
            output_format=output,
            width=width,
            height=height,
        )
        representation = Representation(
            checksum=checksum,
            url=f"{self._url_base}{checksum}.{EXTENSIONS[output]}",
            width=width,
            height=height,
            content_type=CONTENT_TYPES[output],
        )
        return _Entry(source, version, representation)
