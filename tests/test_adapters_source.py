"""``source=``, ``densities=`` and ``gravity=smart`` through both adapters: Django, and Jinja2
with ``{% %}`` and ``<% %>``, autoescape on and off, print exactly the same thing."""

from __future__ import annotations

import pytest
from django.test.utils import override_settings
from jinja2 import DictLoader, Environment

import test_adapters
from fileproc_django import get_registrar
from fileproc_jinja2 import FileProcessorExtension
from fileproc_wsgi.errors import InstructionError
from test_adapters import JINJA2_ENVIRONMENTS, registrar  # noqa: F401 - a fixture
from test_django import (  # noqa: F401 - fixtures, and Django set up
    Context,
    Origin,
    Template,
    engines,
    fileprocessor,
    media,
    render,
)

CASES = [
    pytest.param('source="photo.jpg"', "fit 300x", "", 'width="300" height="180"', id="source-string"),
    pytest.param("source=photo.path", "fit 30x", "", 'width="30" height="15"', id="source-variable"),
    pytest.param('source="default:photo.jpg" alt=photo.title', "", "", 'width="1000"', id="source-only"),
    pytest.param("source=nothing", "fit 30x{% empty %}no photo", "", "no photo", id="source-undefined"),
    pytest.param('source=""', "fit 30x{% empty %}no photo", "", "no photo", id="source-empty"),
    pytest.param('source="/media/a.jpg"', "fit 30x{% empty %}bad", "", "bad", id="source-url-path"),
    pytest.param('source="photo.jpg"', "photo.jpg | fit 30x{% empty %}bad", "", "bad", id="source-twice"),
    pytest.param("", "{{ nothing }} | fit 30x{% empty %}no photo", "", "no photo", id="body-source-empty"),
    pytest.param("", "source {{ nothing }} | fit 30x{% empty %}no", "", "no", id="body-source-word-empty"),
    pytest.param("", "# photo\n{{ nothing }} | fit 30x{% empty %}no", "", "no", id="comment-source-empty"),
    # Not strict here: the error (a forgotten source?) is logged and the empty branch printed.
    pytest.param("", "{{ nothing }}\nfit 30x{% empty %}no", "", "no", id="body-source-line-empty"),
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


def test_a_literal_source_string_is_answered_from_the_blocks_memory(
    registrar,  # noqa: F811 - the fixture imported above
    monkeypatch,
):
    # Django hands a literal as a SafeString and Jinja2's |safe as a Markup: both are the
    # name itself, so a warm block must not rebuild (register every variant) each render.
    source = '{% fileprocessor source="photo.jpg" widths="100,200" %}fit 300x{% endfileprocessor %}'
    django_template = Template(
        "{% load fileprocessor %}" + source, origin=Origin("p.html"), engine=engines["django"].engine
    )
    environment = Environment(extensions=[FileProcessorExtension], loader=DictLoader({}))
    environment.fileprocessor_registrar = registrar
    jinja2_template = environment.from_string(source.replace('"photo.jpg"', '"photo.jpg"|safe'))
    calls = []
    for counted in (get_registrar(), registrar):
        many = counted.register_many
        monkeypatch.setattr(counted, "register_many", lambda texts, many=many: calls.append(1) or many(texts))
    pages = [django_template.render(Context({})) for _ in range(3)]
    pages += [jinja2_template.render() for _ in range(3)]
    assert len(calls) == 2, "one registration of the block per adapter, then its memory"
    assert len(set(pages)) == 1 and 'width="300"' in pages[0]


@pytest.mark.parametrize(
    ("body", "empty"),
    [
        pytest.param("{{ nothing }} | fit 30x", True, id="source-before-pipe"),
        pytest.param("source {{ nothing }} | fit 30x", True, id="source-word"),
        pytest.param("source {{ nothing }}\n  fit 30x", True, id="source-word-on-its-line"),
        pytest.param("# the photo\n{{ nothing }} | fit 30x", True, id="comment-first"),
        # Operations alone on the first line: a source forgotten as much as one left empty.
        pytest.param("{{ nothing }}\n  fit 30x", False, id="source-line"),
    ],
)
def test_a_body_source_that_printed_nothing_under_strict_templates(
    registrar,  # noqa: F811 - the fixture imported above
    body,
    empty,
):
    source = f"{{% fileprocessor %}}{body}{{% empty %}}no photo{{% endfileprocessor %}}"
    environment = Environment(extensions=[FileProcessorExtension], loader=DictLoader({}))
    environment.fileprocessor_registrar = registrar
    environment.fileprocessor_strict = True
    debug = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "OPTIONS": {"debug": True}}]
    with override_settings(TEMPLATES=debug):
        renders = (lambda: render(source), lambda: environment.from_string(source).render())
        for rendered in renders:
            if empty:
                assert rendered() == "no photo"
            else:
                with pytest.raises(InstructionError, match="pass it as source= on the tag"):
                    rendered()
