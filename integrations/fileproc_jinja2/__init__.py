"""Jinja2 support for fileproc_wsgi: the ``{% fileprocessor %}`` block tag.

Add the extension and give the environment a registrar::

    env = Environment(extensions=["fileproc_jinja2.FileProcessorExtension"])
    env.fileprocessor_registrar = Registrar(config)
    env.fileprocessor_strict = True   # bad instruction text raises (default: logged);
                                      # or a callable asked at each render: lambda: app.debug

Then, with the default delimiters or with ``<% %>``::

    {% fileprocessor alt=photo.title class="thumb" %}
      media:{{ photo.path }} | fit 400x300
    {% endfileprocessor %}

    {% fileprocessor as thumb %}{{ photo.path }} | fill 80x80{% empty %}no picture{% endfileprocessor %}
    {% if thumb %}<img src="{{ thumb.url }}" width="{{ thumb.width }}">{% endif %}

    {% fileprocessor source=user.avatar densities="1,2" %}fill 80x80 gravity=smart{% empty %}
      no picture
    {% endfileprocessor %}

``source=`` takes a reference string (None or "" render the ``empty`` branch); other
objects go through ``env.fileprocessor_source_reference`` when a framework sets one.

The body is instruction text, not HTML, so it is rendered without autoescaping; what
the block prints is decided by :class:`fileproc_wsgi.block.Block`, shared with the
Django adapter so that both print the same HTML.
"""

from __future__ import annotations

from .extension import FileProcessorExtension

__all__ = ["FileProcessorExtension"]
