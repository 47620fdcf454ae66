"""Django storages as source roots, and model file fields as ``source=`` values.

A source root ``"django:default"`` reads through ``storages["default"]`` (any alias of
``STORAGES``); ``"django:gallery.Photo.image"`` through the storage of that model
field. :func:`register` (called by the app's ``ready()``) teaches the core this
``django`` kind of root, so a registration reads the file's header through the storage
and a job streams the file from it, whatever the backend: a ``FileSystemStorage`` root
behaves exactly like a directory root, anything else goes through the storage API.

What tells a replaced file from the one registered before (its *version*):

- ``FileSystemStorage``: the file's size and modification time, as for any directory;
- django-storages ``S3Storage``: the object's ETag and size, from one ``HEAD`` request;
- any other storage (``InMemoryStorage``, Google Cloud, Azure ...): ``size()`` and
  ``get_modified_time()``; where the backend has no modified time, a digest of the
  content, which reads the whole file at every check.

:func:`reference_of` turns a ``FieldFile`` (what ``photo.image`` is in a template) into
the reference ``"<root>:<name>"`` of the root that serves its storage.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.functional import LazyObject, empty

from fileproc_wsgi.errors import ConfigError, InstructionError, SourceNotFoundError

KIND = "django"
KIND_PREFIX = f"{KIND}:"
# A root read through a registered kind (C1 of the shared contract), not a directory.
_KIND_VALUE = re.compile(r"^[a-z]{2,}:(?!//)")


def register() -> None:
    """Make ``"django:<alias or app_label.Model.field>"`` source roots resolvable here."""
    from fileproc_wsgi.sources import register_storage_kind

    register_storage_kind(KIND, open_storage)


def open_storage(argument: str) -> DjangoStorage:
    """The backend of a ``django:`` root; raises ConfigError naming what is missing."""
    storage, what = _storage_named(argument)
    return DjangoStorage(storage, f"{what} ({type(storage).__name__})")


def _storage_named(argument: str) -> tuple[Storage, str]:
    parts = argument.split(".")
    if len(parts) == 3 and all(parts):
        app_label, model_name, field_name = parts
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            raise ConfigError(
                f"source root 'django:{argument}': no model {app_label}.{model_name} "
                "(expected an installed app's model, as app_label.Model.field)"
            ) from None
        try:
            field = model._meta.get_field(field_name)
        except FieldDoesNotExist:
            raise ConfigError(
                f"source root 'django:{argument}': {model.__name__} has no field {field_name!r}"
            ) from None
        storage = getattr(field, "storage", None)
        if storage is None:
            raise ConfigError(
                f"source root 'django:{argument}': {model.__name__}.{field_name} is not a file field"
            )
        return _unwrapped(storage), f"the storage of {app_label}.{model.__name__}.{field_name}"
    try:
        storage = storages[argument]
    except ImproperlyConfigured:  # InvalidStorageError: no such alias, or its class is missing
        known = ", ".join(sorted(storages.backends)) or "none"
        raise ConfigError(
            f"source root 'django:{argument}': expected an alias of STORAGES ({known}) "
            "or a model field as app_label.Model.field"
        ) from None
    return storage, f"Django storage {argument!r}"


def _unwrapped(storage):
    """``default_storage`` is a lazy stand-in; the storage behind it is what fields share."""
    if isinstance(storage, LazyObject):
        if storage._wrapped is empty:
            storage._setup()
        return storage._wrapped
    return storage


class DjangoStorage:
    """A Django ``Storage`` seen as the core's ``StorageBackend``: ``label``,
    ``local_directory()``, ``version(name)`` and ``open(name)``.

    A missing file is :class:`SourceNotFoundError`; anything else a backend raises is
    left to the core, which reports it as the storage being unavailable.
    """

    def __init__(self, storage: Storage, label: str):
        self.storage = storage
        self.label = label
        self._s3 = _S3Objects.of(storage)

    def local_directory(self) -> str | None:
        storage = self.storage
        if not isinstance(storage, FileSystemStorage):
            return None
        # A subclass may map names to files its own way; the core can only stand in for
        # the storage when a name is a path under the location, as in FileSystemStorage.
        location = os.path.abspath(storage.location)
        try:
            if storage.path("probe/name") != os.path.join(location, "probe", "name"):
                return None
        except (NotImplementedError, ValueError):
            return None
        return location

    def version(self, name: str) -> str:
        if self._s3 is not None:
            return self._s3.version(name)
        storage = self.storage
        try:
            size = storage.size(name)
            modified = storage.get_modified_time(name)
        except NotImplementedError:
            return self._digest(name)
        except Exception:
            self._raise_if_missing(name)
            raise
        return f"{size}:{modified.isoformat()}"

    def open(self, name: str):
        if self._s3 is not None:
            return self._s3.open(name)
        try:
            return self.storage.open(name, "rb")
        except Exception:
            self._raise_if_missing(name)
            raise

    def _digest(self, name: str) -> str:
        digest = hashlib.blake2b(digest_size=16)
        with self.open(name) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return f"blake2b:{digest.hexdigest()}"

    def _raise_if_missing(self, name: str) -> None:
        # Backends say "absent" in their own words (FileNotFoundError, a 404 from a
        # client library, KeyError ...); exists() is the one question they all answer.
        if not self.storage.exists(name):
            raise SourceNotFoundError(f"{self.label} has no file {name!r}") from None

    def __repr__(self) -> str:
        return f"<DjangoStorage {self.label}>"


class _S3Objects:
    """django-storages' ``S3Storage`` read through its own boto3 client.

    ``storage.open`` gives an ``S3File``, which downloads the whole object before its
    first byte can be read, and ``size`` and ``get_modified_time`` cost one request each.
    Here a version is one ``HEAD`` (ETag and size) and ``open`` is a ``GET`` whose body
    streams, so reading a header costs its own bytes, not the object's.
    """

    def __init__(self, storage, module):
        self.storage = storage
        self._module = module

    @classmethod
    def of(cls, storage) -> _S3Objects | None:
        # Looked up, not imported: a storage of that class means its module is loaded.
        module = sys.modules.get("storages.backends.s3")
        if module is None or not isinstance(storage, module.S3Storage):
            return None
        # Compressed objects are stored gzipped and inflated by S3File only.
        if getattr(storage, "gzip", False):
            return None
        if not all(hasattr(module, name) for name in ("clean_name", "_filter_download_params")):
            return None
        return cls(storage, module)

    def _request(self, name: str) -> dict:
        storage, module = self.storage, self._module
        key = storage._normalize_name(module.clean_name(name))
        parameters = module._filter_download_params(storage.get_object_parameters(key))
        return {"Bucket": storage.bucket_name, "Key": key, **parameters}

    def version(self, name: str) -> str:
        client = self.storage.connection.meta.client
        try:
            head = client.head_object(**self._request(name))
        except self._module.ClientError as error:
            self._raise_if_missing(error, name)
            raise
        return f"{head['ETag'].strip(chr(34))}:{head['ContentLength']}"

    def open(self, name: str):
        client = self.storage.connection.meta.client
        try:
            return client.get_object(**self._request(name))["Body"]
        except self._module.ClientError as error:
            self._raise_if_missing(error, name)
            raise

    def _raise_if_missing(self, error, name: str) -> None:
        if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            raise SourceNotFoundError(f"the storage's bucket has no object {name!r}") from None


def reference_of(value) -> str | None:
    """The source reference of a file with a storage (a ``FieldFile``): ``"<root>:<name>"``.

    The root is the configured one whose storage is the file's (the same object), or a
    directory root holding a ``FileSystemStorage``'s files. None for a value that is not
    a stored file; an empty field gives ``""``. A file no root serves is an
    InstructionError naming the ``FILEPROCESSOR["source_roots"]`` entry to add.
    """
    storage = getattr(value, "storage", None)
    name = getattr(value, "name", None)
    if storage is None or not isinstance(name, (str, type(None))):
        return None
    if not name:
        return ""
    from .conf import get_config

    storage = _unwrapped(storage)
    config = get_config()
    global _served
    for_config, served = _served
    if for_config is not config:  # the settings changed (override_settings): start again
        served = {}
        _served = (config, served)
    known = served.get(id(storage))
    if known is None or known[0] is not storage:
        # Keeping the storage in the entry keeps its id from being reused by another.
        known = served[id(storage)] = (storage, _root_serving(storage, config.source_roots))
    root = known[1]
    if root is None:
        raise _unserved(value, storage)
    root_name, prefix = root
    return f"{root_name}:{prefix}{name}"


# The root serving each storage seen, for the current config: a warm block with a field
# costs a dict lookup, not a walk over the roots with a realpath for each.
_served: tuple = (None, {})


def _root_serving(storage, roots: Mapping[str, str]) -> tuple[str, str] | None:
    """(root, path of the storage's files under it) for the first root serving ``storage``."""
    location = None
    if isinstance(storage, FileSystemStorage):
        location = os.path.realpath(storage.location)
    for root, value in roots.items():
        if value.startswith(KIND_PREFIX):
            if storage_of_root(value) is storage:
                return root, ""
        elif location is not None and not _KIND_VALUE.match(value):
            directory = os.path.realpath(value)
            if os.path.commonpath((location, directory)) == directory:
                below = os.path.relpath(location, directory)
                return root, "" if below == "." else below.replace(os.sep, "/") + "/"
    return None


def storage_of_root(value: str) -> Storage | None:
    """The storage a ``django:`` root value names, or None when it names none (the
    system check and the first source it would serve report that)."""
    try:
        return _storage_named(value[len(KIND_PREFIX) :])[0]
    except ConfigError:
        return None


def _unserved(value, storage) -> InstructionError:
    field = getattr(value, "field", None)
    model = getattr(field, "model", None)
    entry: str | None
    if field is not None and model is not None:
        meta = model._meta
        what = f"a file of {meta.label}.{field.name} ({type(storage).__name__})"
        entry = f'"{meta.model_name}": "django:{meta.label}.{field.name}"'
    else:
        what = f"a file of a {type(storage).__name__}"
        aliases = [alias for alias in storages.backends if _is_storage(alias, storage)]
        entry = f'"{aliases[0]}": "django:{aliases[0]}"' if aliases else None
    problem = f"source= got {what} that no source root serves"
    if entry:
        problem += f'; add {entry} to FILEPROCESSOR["source_roots"]'
    return InstructionError(problem, line=1, column=1, step="source")


def _is_storage(alias: str, storage) -> bool:
    try:
        return storages[alias] is storage
    except ImproperlyConfigured:
        return False
