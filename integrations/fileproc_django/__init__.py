"""fileproc_django: the ``{% fileprocessor %}`` block tag and the middleware for Django.

Add ``"fileproc_django"`` to ``INSTALLED_APPS``, run ``manage.py migrate`` and wrap the
WSGI application, so that the thumbnails a page registers are made when the browser
asks for them::

    # wsgi.py
    application = fileproc_django.wrap(get_wsgi_application())

    {% load fileprocessor %}
    {% fileprocessor alt=photo.title source=photo.image %}fit 400x300{% endfileprocessor %}

No setting is needed beyond ``MEDIA_ROOT`` (which startproject leaves unset): the store
lives in ``DATABASES["default"]``, results under ``MEDIA_ROOT/fileproc``, and sources are
read through the ``default`` storage. A
``FILEPROCESSOR`` dict (keys are :class:`fileproc_wsgi.Config` fields) replaces any of
these one by one; see :mod:`fileproc_django.conf`.
"""

from __future__ import annotations

from .conf import get_config, get_registrar

__all__ = ["get_config", "get_registrar", "wrap"]


def wrap(application):
    """``application`` behind :class:`fileproc_wsgi.FileProcessor`, sharing the template tag's registrar.

    Sharing it is what lets the middleware write each page's new registrations in one
    transaction. With ``registrar_url`` set, another server does the processing, so the
    application is returned as it is. Call it after ``get_wsgi_application()``: settings
    are read here, not at import.
    """
    from fileproc_wsgi import FileProcessor

    config = get_config()
    if config.registrar_url:
        return application
    return FileProcessor(application, config, registrar=get_registrar())
