"""Django for the tests of fileproc_django's storage roots and ``source=``.

Django is configured once per process, by test_django.py; the settings these tests
need (the ``django_photos`` app, ``STORAGES``, the media settings, ``FILEPROCESSOR``)
are applied on top with ``override_settings`` by :func:`site`.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

from django.core.files.base import ContentFile
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponse
from django.test.utils import override_settings
from django.urls import path
from webob import Request

from support import decode, halves
from test_django import render  # noqa: F401 - importing it configures Django, once per process

MEDIA_URL = "/media/"

# The page served through the middleware: its template and context come from the test.
PAGE: dict = {"source": "", "context": {}}


def page(request):
    return HttpResponse(render(PAGE["source"], PAGE["context"]))


urlpatterns = [path("page/", page)]


def settings_for(kind: str, *, s3_endpoint: str | None = None, bucket: str = "") -> dict:
    """Django settings whose default storage is of ``kind``: ``STORAGES`` and the settings
    its backend reads.

    Never the storage's ``OPTIONS``: on Django 4.2, ``override_settings(STORAGES=...)``
    keeps only the default storage's ``BACKEND`` (its ``DEFAULT_FILE_STORAGE``
    compatibility), so a backend configured by ``OPTIONS`` would silently get its defaults
    there. Configured by settings, the same storage is made on every supported Django: a
    FileSystemStorage (or InMemoryStorage) on ``MEDIA_ROOT`` and ``MEDIA_URL`` (which
    :func:`site` sets), an S3Storage from the ``AWS_*`` settings django-storages reads.
    """
    settings: dict = {}
    if kind == "filesystem":
        default = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    elif kind == "memory":
        default = {"BACKEND": "django.core.files.storage.InMemoryStorage"}
    elif kind == "s3":
        default = {"BACKEND": "storages.backends.s3.S3Storage"}
        settings = {
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_S3_ACCESS_KEY_ID": "testing",
            "AWS_S3_SECRET_ACCESS_KEY": "testing",
            "AWS_S3_REGION_NAME": "us-east-1",
        }
    else:
        raise ValueError(kind)
    storages = {
        "default": default,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    return {"STORAGES": storages, **settings}


@contextlib.contextmanager
def site(tmp_path: pathlib.Path, settings: dict, *, debug: bool = False, **fileprocessor):
    """Settings for one test: the photos app, ``MEDIA_ROOT`` in ``tmp_path``, ``settings``
    (from :func:`settings_for`, which may replace ``MEDIA_URL``) and FILEPROCESSOR keeping
    its store and results in ``tmp_path`` with the default storage as the ``media`` root."""
    from fileproc_django import storages as django_storages

    values = {
        "database_url": f"sqlite:///{tmp_path / 'fp.db'}",
        "storage": str(tmp_path / "results"),
        "source_roots": {"media": "django:default"},
        # Tests replace files and expect the next render to see it.
        "source_check_interval": 0,
        "remote_source_check_interval": 0,
        **fileprocessor,
    }
    with override_settings(
        INSTALLED_APPS=["fileproc_django", "django_photos"],
        **{"MEDIA_ROOT": str(tmp_path / "media"), "MEDIA_URL": MEDIA_URL, **settings},
        ROOT_URLCONF=__name__,
        DEBUG=debug,
        FILEPROCESSOR=values,
    ):
        django_storages.register()
        yield values


def jpeg(width: int, height: int) -> ContentFile:
    buffer = io.BytesIO()
    halves(width, height).save(buffer, "JPEG", quality=90)
    return ContentFile(buffer.getvalue())


def photo(name: str = "holiday.jpg", size: tuple[int, int] = (600, 400), **fields):
    """A Photo (not saved in any database) whose ``image`` is saved through its storage."""
    from django_photos.models import Photo

    instance = Photo(**fields)
    if name:
        instance.image.save(name, jpeg(*size), save=False)
    return instance


IMG = re.compile(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"')


def images(html: str) -> list[tuple[str, int, int]]:
    return [(url, int(width), int(height)) for url, width, height in IMG.findall(html)]


def fetch(app, url: str):
    """The response to ``url`` after following the middleware's redirect, and the redirect's status."""
    first = Request.blank(url).get_response(app)
    response = first
    if first.status_int in (301, 302):
        response = Request.blank(first.location).get_response(app)
    response.body  # noqa: B018 - read it all, as a server would, so files get closed
    return first.status_int, response


def wrapped():
    """The page's Django app behind fileproc_django's middleware."""
    import fileproc_django

    return fileproc_django.wrap(WSGIHandler())


__all__ = ["decode", "fetch", "images", "jpeg", "photo", "render", "settings_for", "site", "wrapped", "PAGE"]
