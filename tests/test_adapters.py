"""One table of blocks through both adapters: Django, and Jinja2 with ``{% %}`` and ``<% %>``,
autoescape on and off, must print exactly the same thing.

The two adapters share their meaning through the core (``fileproc_wsgi.block``) and never
through each other; this is where that promise is checked.
"""

from __future__ import annotations

import re

import pytest
from jinja2 import DictLoader, Environment

from fileproc_jinja2 import FileProcessorExtension
from fileproc_wsgi import Config, Registrar
from test_django import fileprocessor, media, render  # noqa: F401 - fixtures, and Django set up

PHOTO = {"title": 'Tom & "Jerry" <3', "path": "tom&jerry.png", "size": 120}

# (tag arguments, body, what follows the block, what a correct output contains), written
# once for both adapters.
CASES = [
    pytest.param("", "photo.jpg | fit 300x", "", 'width="300" height="180"', id="plain"),
    pytest.param(
        "alt=photo.title", "photo.jpg | fit 300x", "", 'alt="Tom &amp; &quot;Jerry&quot; &lt;3"', id="alt"
    ),
    pytest.param(
        'class="thumb" data-id=photo.size',
        "photo.jpg | fill 50x50",
        "",
        'class="thumb" data-id="120"',
        id="attrs",
    ),
    pytest.param("alt=photo.title|upper", "photo.jpg | fit 10x", "", 'alt="TOM &amp;', id="filter"),
    pytest.param("hidden=True", "photo.jpg | fit 10x", "", " hidden>", id="boolean"),
    pytest.param(
        "", "{{ photo.path }} | fit {{ photo.size }}x", "", 'width="120" height="60"', id="body-vars"
    ),
    pytest.param('widths="200,400,2000"', "photo.jpg | fit 800x", "", " 400w", id="srcset"),
    pytest.param('widths="200,400" sizes="50vw"', "photo.jpg", "", 'sizes="50vw"', id="sizes"),
    pytest.param(
        'formats="avif,webp"', "photo.jpg | fit 300x", "", '<source type="image/webp"', id="picture"
    ),
    pytest.param('formats="webp" widths="100,200"', "photo.jpg | fit 300x", "", "200w", id="picture-srcset"),
    pytest.param("", "missing.jpg | fit 10x{% empty %}no picture", "", "no picture", id="missing-empty"),
    pytest.param("", "photo.jpg | fit 10by{% empty %}bad text", "", "bad text", id="bad-text-empty"),
    pytest.param(
        "as thumb",
        "photo.jpg | fit 64x{% empty %}none",
        "[{{ thumb.width }} {{ thumb.height }} {{ thumb.content_type }} {{ thumb.url }}]{{ thumb }}",
        "[64 38 image/jpeg /_fp/",
        id="as-name",
    ),
]

JINJA2_ENVIRONMENTS = [
    pytest.param({}, True, id="braces-autoescape"),
    pytest.param({}, False, id="braces-plain"),
    pytest.param({"block_start_string": "<%", "block_end_string": "%>"}, True, id="angles-autoescape"),
    pytest.param({"block_start_string": "<%", "block_end_string": "%>"}, False, id="angles-plain"),
]


@pytest.fixture
def registrar(fileprocessor):  # noqa: F811 - the fixture imported above
    registrar = Registrar(Config.from_mapping(fileprocessor))
    yield registrar
    registrar.close()


@pytest.mark.parametrize(("delimiters", "autoescape"), JINJA2_ENVIRONMENTS)
@pytest.mark.parametrize(("arguments", "body", "after", "contains"), CASES)
def test_both_adapters_print_the_same(registrar, delimiters, autoescape, arguments, body, after, contains):
    source = f"{{% fileprocessor {arguments} %}}{body}{{% endfileprocessor %}}{after}"

    django_html = render(source, {"photo": PHOTO})

    environment = Environment(
        extensions=[FileProcessorExtension], autoescape=autoescape, loader=DictLoader({}), **delimiters
    )
    environment.fileprocessor_registrar = registrar
    start, end = environment.block_start_string, environment.block_end_string
    environment.loader.mapping["page.html"] = source.replace("{%", start).replace("%}", end)
    jinja2_html = environment.get_template("page.html").render(photo=PHOTO)

    assert jinja2_html == django_html
    assert contains in django_html
    assert not re.search(r"&amp;(amp|quot|lt);", django_html), "escaped twice"
