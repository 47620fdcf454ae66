"""``source=``, ``densities=`` and ``gravity=smart`` through both adapters: Django, and Jinja2
with ``{% %}`` and ``<% %>``, autoescape on and off, print exactly the same thing."""

from __future__ import annotations

import pytest

import test_adapters
from test_adapters import JINJA2_ENVIRONMENTS, registrar  # noqa: F401 - a fixture
from test_django import fileprocessor, media  # noqa: F401 - fixtures, and Django set up

CASES = [
    pytest.param('source="photo.jpg"', "fit 300x", "", 'width="300" height="180"', id="source-string"),
    pytest.param("source=photo.path", "fit 30x", "", 'width="30" height="15"', id="source-variable"),
    pytest.param('source="default:photo.jpg" alt=photo.title', "", "", 'width="1000"', id="source-only"),
    pytest.param("source=nothing", "fit 30x{% empty %}no photo", "", "no photo", id="source-undefined"),
    pytest.param('source=""', "fit 30x{% empty %}no photo", "", "no photo", id="source-empty"),
    pytest.param('source="/media/a.jpg"', "fit 30x{% empty %}bad", "", "bad", id="source-url-path"),
    pytest.param('source="photo.jpg"', "photo.jpg | fit 30x{% empty %}bad", "", "bad", id="source-twice"),
    pytest.param("", "{{ nothing }} | fit 30x{% empty %}no photo", "", "no photo", id="body-source-empty"),
    pytest.param('densities="1,2"', "photo.jpg | fit 300x", "", " 2x", id="densities"),
    pytest.param(
        'densities="1x,1.5x" formats="webp"', "photo.jpg | fit 300x", "", "1.5x", id="densities-formats"
    ),
    pytest.param("", "photo.jpg | fill 100x100 gravity=smart", "", 'width="100"', id="gravity-smart"),
    pytest.param("", "photos/my photo.jpg | fit 20x{% empty %}missing", "", "missing", id="space-in-name"),
]


@pytest.mark.parametrize(("delimiters", "autoescape"), JINJA2_ENVIRONMENTS)
@pytest.mark.parametrize(("arguments", "body", "after", "contains"), CASES)
def test_source_and_densities_print_the_same(
    registrar,  # noqa: F811 - the fixture imported above
    delimiters,
    autoescape,
    arguments,
    body,
    after,
    contains,
):
    test_adapters.test_both_adapters_print_the_same(
        registrar, delimiters, autoescape, arguments, body, after, contains
    )
