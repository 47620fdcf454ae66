"""The Jinja2 block: what a page prints, what reaches the registrar, what the browser then gets.

Templates here are written with ``{% %}`` and run with both the default delimiters and
``<% %>``, with autoescaping on and off; sources are real images in the test's
directory, registered in a real SQLite store.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re

import pytest
import sqlalchemy
from jinja2 import DictLoader, Environment, TemplateSyntaxError
from webob import Request

from fileproc_jinja2 import FileProcessorExtension
from fileproc_wsgi import Config, ConfigError, FileProcessor, InstructionError, Registrar
from fileproc_wsgi.block import build
from support import decode, halves, write

ANGLE = {"block_start_string": "<%", "block_end_string": "%>"}
ENVIRONMENTS = [
    pytest.param(({}, True), id="braces-autoescape"),
    pytest.param(({}, False), id="braces-plain"),
    pytest.param((ANGLE, True), id="angle-autoescape"),
    pytest.param((ANGLE, False), id="angle-plain"),
]
_URL = re.compile(r"/_fp/[0-9a-f]{32}\.[a-z]+")


@pytest.fixture
def registrar(tmp_path):
    media = tmp_path / "media"
    write(media, "photo.jpg", halves(1000, 600), quality=90)
    write(media, "a&b.png", halves(400, 400))
    registrar = Registrar(
        Config(
            source_roots={"default": str(media)},
            database_url=f"sqlite:///{tmp_path / 'fp.db'}",
            storage=str(tmp_path / "results"),
            source_check_interval=0,  # tests replace sources and expect the next render to see it
        )
    )
    yield registrar
    registrar.close()


@pytest.fixture(params=ENVIRONMENTS)
def env(request, registrar):
    delimiters, autoescape = request.param
    environment = Environment(
        extensions=[FileProcessorExtension], autoescape=autoescape, loader=DictLoader({}), **delimiters
    )
    environment.fileprocessor_registrar = registrar
    return environment


def template(env: Environment, source: str, name: str = "page.html"):
    """``source`` (written with ``{% %}``) in this environment's block delimiters."""
    env.loader.mapping[name] = source.replace("{%", env.block_start_string).replace(
        "%}", env.block_end_string
    )
    return env.get_template(name)


def fetch(app, url: str):
    """Follow a thumbnail URL through its redirect like a browser; the decoded image."""
    redirect = Request.blank(url).get_response(app)
    assert redirect.status_int == 301, redirect.text
    result = Request.blank(redirect.location).get_response(app)
    assert result.status_int == 200, result.text
    return decode(result.body)


def stored_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return [path for path in directory.rglob("*") if path.is_file()] if directory.exists() else []


@pytest.mark.parametrize(
    ("source", "context", "text", "expected"),
    [
        pytest.param(
            "{% fileprocessor %}photo.jpg | fit 300x{% endfileprocessor %}",
            {},
            "photo.jpg | fit 300x",
            '<img src="{url}" width="300" height="180" alt="" loading="lazy" decoding="async">',
            id="plain",
        ),
        pytest.param(
            """{% fileprocessor alt='"Tom & Jerry"' class="thumb" %}"""
            "photo.jpg | fit 300x{% endfileprocessor %}",
            {},
            "photo.jpg | fit 300x",
            '<img src="{url}" width="300" height="180" alt="&quot;Tom &amp; Jerry&quot;" loading="lazy" '
            'decoding="async" class="thumb">',
            id="attributes-escaped",
        ),
        pytest.param(
            "{% fileprocessor alt=photo.title|upper class=kind ~ '-thumb' data-id=photo.id %}"
            "{{ photo.path }} | fill 200x100{% endfileprocessor %}",
            {"photo": {"title": "tom & jerry", "path": "photo.jpg", "id": 7}, "kind": "card"},
            "photo.jpg | fill 200x100",
            '<img src="{url}" width="200" height="100" alt="TOM &amp; JERRY" loading="lazy" '
            'decoding="async" class="card-thumb" data-id="7">',
            id="expressions-and-filters",
        ),
        pytest.param(
            "{% fileprocessor %}{{ name }} | fill 200x100 | format webp{% endfileprocessor %}",
            {"name": "a&b.png"},
            "a&b.png | fill 200x100 | format webp",
            '<img src="{url}" width="200" height="100" alt="" loading="lazy" decoding="async">',
            id="body-is-not-escaped",
        ),
        pytest.param(
            "<p>{% fileprocessor %}\n  photo.jpg\n  # half size\n  fit x300\n{% endfileprocessor %}</p>",
            {},
            "photo.jpg | fit x300",
            '<p><img src="{url}" width="500" height="300" alt="" loading="lazy" decoding="async"></p>',
            id="multiline-body",
        ),
        pytest.param(
            "{% fileprocessor alt=nothing %}photo.jpg | fit 300x{% endfileprocessor %}",
            {},
            "photo.jpg | fit 300x",
            '<img src="{url}" width="300" height="180" alt="" loading="lazy" decoding="async">',
            id="undefined-argument-prints-empty",
        ),
    ],
)
def test_block_prints_an_img(env, registrar, source, context, text, expected):
    printed = template(env, source).render(context)
    url = registrar.register(text).url
    assert _URL.fullmatch(url)
    assert printed == expected.format(url=url)


def test_prints_exactly_what_the_core_renders(env, registrar):
    # The Django adapter prints the same function's result: this is the parity contract.
    printed = template(
        env,
        '{% fileprocessor alt="A & B" class="hero" widths="300,600" formats="avif,webp" sizes="50vw" %}'
        "photo.jpg | fit 800x{% endfileprocessor %}",
    ).render()
    arguments = {
        "alt": "A & B",
        "class": "hero",
        "widths": "300,600",
        "formats": "avif,webp",
        "sizes": "50vw",
    }
    assert printed == build(registrar, "photo.jpg | fit 800x", arguments).html
    assert printed.startswith('<picture><source type="image/avif" srcset="/_fp/')


def test_as_name_stores_the_rendition_and_prints_nothing(env, registrar):
    page = template(
        env,
        '{% fileprocessor as thumb alt="x" %}photo.jpg | fill 200x100 | format webp{% endfileprocessor %}'
        "[{{ thumb.url }}|{{ thumb.width }}|{{ thumb.height }}|{{ thumb.checksum }}|{{ thumb.content_type }}]"
        "{{ thumb }}",
    ).render()
    representation = registrar.register("photo.jpg | fill 200x100 | format webp")
    assert page == (
        f"[{representation.url}|200|100|{representation.checksum}|image/webp]"
        f'<img src="{representation.url}" width="200" height="100" alt="x" loading="lazy" decoding="async">'
    )


def test_as_name_in_a_loop_is_set_each_time(env):
    page = template(
        env,
        "{% for name in names %}{% fileprocessor as t %}{{ name }} | fit 100x{% endfileprocessor %}"
        "{{ t.width }}x{{ t.height }};{% endfor %}",
    ).render(names=["photo.jpg", "a&b.png"])
    assert page == "100x60;100x100;"


def test_a_replaced_source_gets_a_new_url_on_the_next_render(env, registrar, tmp_path):
    page = template(env, '{% fileprocessor alt="p" %}photo.jpg | fit 400x{% endfileprocessor %}')
    before = page.render()
    assert page.render() == before
    write(tmp_path / "media", "photo.jpg", halves(800, 800))
    after = page.render()
    assert re.search(r'width="400" height="400"', after)
    assert _URL.search(after).group() != _URL.search(before).group()


def test_values_that_compare_equal_but_print_differently_are_not_confused(env):
    page = template(env, "{% fileprocessor hidden=flag %}photo.jpg | fit 50x{% endfileprocessor %}")
    assert page.render(flag=True).endswith('decoding="async" hidden>')
    assert page.render(flag=1).endswith('decoding="async" hidden="1">')
    assert page.render(flag=True).endswith('decoding="async" hidden>')


def test_list_values_and_a_new_registrar_are_rendered_afresh(env, registrar, tmp_path):
    page = template(env, "{% fileprocessor widths=widths %}photo.jpg | fit 600x{% endfileprocessor %}")
    assert page.render(widths=[300]).count(" 300w") == 1
    assert page.render(widths=[200, 300]).count("w, ") == 1
    other = Registrar(
        Config(
            source_roots={"default": str(tmp_path / "media")},
            database_url=f"sqlite:///{tmp_path / 'other.db'}",
            storage=str(tmp_path / "results"),
            prefix="/other",
        )
    )
    try:
        env.fileprocessor_registrar = other
        assert page.render(widths="300").startswith('<img src="/other/')
        assert other.store.count_by_state() == {"pending": 2}
    finally:
        other.close()


def test_widths_give_a_srcset_of_real_widths(env, registrar):
    printed = template(
        env,
        '{% fileprocessor widths="300,600,2000" sizes="50vw" %}photo.jpg | fit 800x{% endfileprocessor %}',
    ).render()
    match = re.fullmatch(
        r'<img src="(/_fp/\w+\.jpg)" width="800" height="480" alt="" loading="lazy" decoding="async" '
        r'srcset="([^"]+)" sizes="50vw">',
        printed,
    )
    assert match, printed
    candidates = [candidate.split(" ") for candidate in match.group(2).split(", ")]
    # 2000 is wider than the result: the result itself is offered at its own width instead.
    assert [descriptor for _, descriptor in candidates] == ["300w", "600w", "800w"]
    assert candidates[-1][0] == match.group(1)
    app = FileProcessor(None, registrar.config, store=registrar.store)
    assert fetch(app, match.group(1)).size == (800, 480)
    for url, descriptor in candidates:
        assert fetch(app, url).width == int(descriptor[:-1])


def test_formats_give_a_picture_with_the_img_as_fallback(env, registrar):
    printed = template(
        env,
        '{% fileprocessor formats="webp" widths="300" alt="p" %}photo.jpg | fit 600x{% endfileprocessor %}',
    ).render()
    match = re.fullmatch(
        r'<picture><source type="image/webp" srcset="(/_fp/\w+\.webp) 300w" sizes="100vw">'
        r'<img src="(/_fp/\w+\.jpg)" width="600" height="360" alt="p" loading="lazy" decoding="async" '
        r'srcset="(/_fp/\w+\.jpg) 300w" sizes="100vw"></picture>',
        printed,
    )
    assert match, printed
    app = FileProcessor(None, registrar.config, store=registrar.store)
    webp = fetch(app, match.group(1))
    assert (webp.format, webp.width) == ("WEBP", 300)
    assert fetch(app, match.group(2)).size == (600, 360)


@pytest.mark.parametrize(
    ("text", "strict", "logged"),
    [
        pytest.param(
            "missing.jpg | fit 100x", False, "source 'missing.jpg' does not exist", id="missing-source"
        ),
        pytest.param(
            "missing.jpg | fit 100x", True, "source 'missing.jpg' does not exist", id="missing-source-strict"
        ),
        pytest.param(
            "photo.jpg | fit 10by",
            False,
            "page.html, line 1, column 17, step 'fit'",
            id="bad-text-not-strict",
        ),
    ],
)
def test_failures_render_the_empty_branch_and_log(env, caplog, text, strict, logged):
    env.fileprocessor_strict = strict
    source = (
        "A{% fileprocessor alt='x' %}{{ text }}{% empty %}<em>none</em>{% endfileprocessor %}B"
        "{% fileprocessor %}{{ text }}{% endfileprocessor %}C"
        "{% fileprocessor as t %}{{ text }}{% empty %}[{{ t }}]{% endfileprocessor %}{{ t is none }}"
    )
    with caplog.at_level(logging.WARNING, logger="fileproc_wsgi.block"):
        page = template(env, source).render(text=text)
    assert page == "A<em>none</em>BC[None]True"
    assert len(caplog.records) == 3
    assert all(logged in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("options", "source", "where", "line", "message"),
    [
        pytest.param(
            {},
            "<h1>Gallery</h1>\n{% fileprocessor alt='x' %}\n  photo.jpg\n  fit 300x | rotate ninety\n"
            "{% endfileprocessor %}",
            "gallery.html",
            4,
            "gallery.html, line 4, column 21, step 'rotate'",
            id="multiline",
        ),
        pytest.param(
            {"trim_blocks": True, "lstrip_blocks": True},
            "<h1>Gallery</h1>\n  {% fileprocessor %}\n  photo.jpg\n  fit 300x | rotate ninety\n"
            "  {% endfileprocessor %}",
            "gallery.html",
            4,
            "gallery.html, line 4, column 21",
            id="trim-blocks",
        ),
        pytest.param(
            {},
            "<h1>Gallery</h1>\n{% fileprocessor -%}\n\n  photo.jpg | fit 300x | rotate ninety\n"
            "{% endfileprocessor %}",
            "gallery.html",
            4,
            "gallery.html, line 4, column",
            id="whitespace-control",
        ),
        pytest.param(
            {},
            '\n\n{% fileprocessor widths="wide" %}photo.jpg{% endfileprocessor %}',
            "gallery.html",
            3,
            "gallery.html, line 3, column 1, step 'widths': widths= expects whole numbers",
            id="bad-argument",
        ),
        pytest.param(
            {},
            "x\n{% fileprocessor %}photo.jpg | fit{% endfileprocessor %}",
            None,
            2,
            "<template>, line 2",
            id="unnamed",
        ),
    ],
)
@pytest.mark.parametrize("delimiters", [pytest.param({}, id="braces"), pytest.param(ANGLE, id="angle")])
def test_strict_errors_name_the_template_and_its_line(
    registrar, delimiters, options, source, where, line, message
):
    env = Environment(extensions=[FileProcessorExtension], loader=DictLoader({}), **delimiters, **options)
    env.fileprocessor_registrar = registrar
    env.fileprocessor_strict = True
    if where is None:
        page = env.from_string(
            source.replace("{%", env.block_start_string).replace("%}", env.block_end_string)
        )
    else:
        page = template(env, source, where)
    with pytest.raises(InstructionError) as raised:
        page.render()
    assert (raised.value.where, raised.value.line) == (where or "<template>", line)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("source", "lineno", "message"),
    [
        pytest.param(
            "x\n{% fileprocessor as %}photo.jpg{% endfileprocessor %}",
            2,
            "'as' needs a variable name",
            id="as-no-name",
        ),
        pytest.param(
            "{% fileprocessor as none %}photo.jpg{% endfileprocessor %}",
            1,
            "'as' needs a variable name",
            id="as-none",
        ),
        pytest.param(
            "{% fileprocessor as a as b %}photo.jpg{% endfileprocessor %}",
            1,
            "'as' is given twice",
            id="as-twice",
        ),
        pytest.param(
            "\n\n{% fileprocessor alt %}photo.jpg{% endfileprocessor %}",
            3,
            "expected key=value, got 'alt' without a value",
            id="not-key-value",
        ),
        pytest.param(
            "{% fileprocessor 'photo.jpg' %}{% endfileprocessor %}",
            1,
            "expected key=value or 'as NAME', got string",
            id="positional-value",
        ),
        pytest.param(
            "{% fileprocessor alt= %}photo.jpg{% endfileprocessor %}",
            1,
            "alt= needs a value",
            id="missing-value",
        ),
        pytest.param(
            "x\n{% fileprocessor alt='a'\n class='b' alt='c' %}photo.jpg{% endfileprocessor %}",
            3,
            "argument 'alt' is given twice",
            id="duplicate-keyword",
        ),
        pytest.param(
            "x\n{% fileprocessor %}\nphoto.jpg\n",
            2,
            "the block opened on line 2 has no endfileprocessor",
            id="no-end",
        ),
        pytest.param(
            "{% fileprocessor %}photo.jpg{% empty %}\nnone\n",
            1,
            "the block opened on line 1 has no endfileprocessor",
            id="no-end-after-empty",
        ),
        pytest.param(
            "{% fileprocessor %}photo.jpg{% empty now %}{% endfileprocessor %}",
            1,
            "'empty' takes no arguments",
            id="empty-with-arguments",
        ),
        pytest.param(
            "{% fileprocessor %}photo.jpg\n{% endfileprocessor thumb %}",
            2,
            "'endfileprocessor' takes no arguments",
            id="end-with-arguments",
        ),
    ],
)
def test_syntax_errors_give_the_line_and_the_expected_syntax(env, source, lineno, message):
    with pytest.raises(TemplateSyntaxError) as raised:
        template(env, source, "broken.html")
    start, end = env.block_start_string, env.block_end_string
    assert raised.value.lineno == lineno
    assert raised.value.name == "broken.html"
    assert raised.value.message.startswith(f"fileprocessor: {message}")
    assert raised.value.message.endswith(
        f"Expected {start} fileprocessor [as NAME] [key=value ...] {end}…[{start} empty {end}…]"
        f"{start} endfileprocessor {end}"
    )


def test_settings_live_on_the_environment_and_a_missing_registrar_is_named():
    env = Environment(extensions=["fileproc_jinja2.FileProcessorExtension"])
    assert (env.fileprocessor_registrar, env.fileprocessor_strict) == (None, False)
    page = env.from_string("{% fileprocessor %}photo.jpg{% endfileprocessor %}")
    with pytest.raises(ConfigError, match="set environment.fileprocessor_registrar"):
        page.render()


def test_rendering_touches_no_pixel(env, registrar, tmp_path):
    page = template(
        env,
        "{% fileprocessor %}photo.jpg | fit 300x{% endfileprocessor %}"
        '{% fileprocessor widths="100,200" formats="webp" %}photo.jpg | fill 300x300{% endfileprocessor %}'
        "{% fileprocessor as t %}a&b.png | grayscale{% endfileprocessor %}",
    ).render()
    assert page.count("<img") == 2
    assert stored_files(tmp_path / "results") == []
    # fit 300x; fill, +webp, +100w, +100w webp, +200w, +200w webp; grayscale.
    assert registrar.store.count_by_state() == {"pending": 8}


def test_a_page_through_the_middleware_is_one_commit_and_every_src_answers(env, registrar, tmp_path):
    page = template(
        env,
        "{% for name in names %}"
        "{% fileprocessor alt=name %}{{ name }} | fit {{ 100 + loop.index }}x{% endfileprocessor %}\n"
        "{% endfor %}"
        '{% fileprocessor widths="150,250" %}photo.jpg | fill 300x200 | format webp{% endfileprocessor %}\n'
        "{% fileprocessor %}missing.jpg{% empty %}<p>gone</p>{% endfileprocessor %}",
    )
    registrar.store.create_tables()
    commits = []
    sqlalchemy.event.listen(registrar.store.engine, "commit", lambda connection: commits.append(1))

    def application(environ, start_response):
        body = page.render(names=["photo.jpg", "a&b.png", "photo.jpg"]).encode()
        assert commits == [], "nothing is written while the page renders"
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    # Made on request only: what the page's batch starts in the background is tested apart.
    config = dataclasses.replace(registrar.config, background_jobs=0)
    app = FileProcessor(application, config, registrar=registrar)
    response = Request.blank("/").get_response(app)
    assert response.status_int == 200
    assert len(commits) == 1
    assert "<p>gone</p>" in response.text
    assert stored_files(tmp_path / "results") == []

    images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', response.text)
    assert [(int(width), int(height)) for _, width, height in images] == [
        (101, 61),
        (102, 102),
        (103, 62),
        (300, 200),
    ]
    for url, width, height in images:
        assert fetch(app, url).size == (int(width), int(height))
    for url, descriptor in re.findall(r"(/_fp/\w+\.webp) (\d+)w", response.text):
        image = fetch(app, url)
        assert (image.format, image.size) == ("WEBP", (int(descriptor), round(int(descriptor) * 2 / 3)))


def test_templates_from_a_bytecode_cache_render_in_a_new_environment(registrar, tmp_path):
    """A compiled template can come from another process (FileSystemBytecodeCache): the
    block must not depend on state the compiling environment kept."""
    from jinja2 import FileSystemBytecodeCache

    (tmp_path / "bytecode").mkdir()
    cache = FileSystemBytecodeCache(str(tmp_path / "bytecode"))
    source = '{% fileprocessor alt="x" %}photo.jpg | fit 100x{% endfileprocessor %}'
    printed = []
    for _ in range(2):  # the second environment loads the first one's code
        loader = DictLoader({"page.html": source})
        environment = Environment(extensions=[FileProcessorExtension], loader=loader, bytecode_cache=cache)
        environment.fileprocessor_registrar = registrar
        printed.append(environment.get_template("page.html").render())
    assert any((tmp_path / "bytecode").iterdir()), "the cache was used"
    assert printed[0] == printed[1] and 'width="100" height="60" alt="x"' in printed[1]


# --------------------------------------------------------------------------- optional sources


class _Upload:
    """A framework's file object: it has a name, and prints as something else."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return f"<Upload: {self.name}>"


@pytest.mark.parametrize(
    ("body", "context"),
    [
        pytest.param("{{ photo }} | fit 180x180", {"photo": None}, id="none"),
        pytest.param("{{ photo }} | fit 180x180", {}, id="undefined"),
        pytest.param("{{ photo }} | fit 180x180", {"photo": ""}, id="empty-string"),
        pytest.param("{{ user.photo }}\n  | fit 180x180", {"user": {"photo": None}}, id="none-attribute"),
        pytest.param(
            "{% if 1 %}{{ photo }}{% endif %} | fit 180x180", {"photo": None}, id="none-in-a-statement"
        ),
        pytest.param("{% for _ in [1] %}{{ photo }}{% endfor %}| fit 9x", {}, id="undefined-in-a-loop"),
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_a_source_that_prints_nothing_renders_the_empty_branch(env, caplog, body, context, strict):
    env.fileprocessor_strict = strict
    source = "[{% fileprocessor %}" + body + "{% empty %}no photo{% endfileprocessor %}]"
    with caplog.at_level(logging.DEBUG, logger="fileproc_wsgi.block"):
        assert template(env, source).render(context) == "[no photo]"
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_none_prints_nothing_in_the_body_but_as_usual_elsewhere(env, registrar):
    source = (
        "{% fileprocessor %}{% if 1 %}photo.jpg{{ none }} | fit 30x{% endif %}{% endfileprocessor %}"
        "{{ none }}"
    )
    page = template(env, source).render(none=None)
    assert page.endswith(">None")
    assert registrar.register("photo.jpg | fit 30x").url in page


@pytest.mark.parametrize(
    ("source_argument", "other", "context", "body_text"),
    [
        pytest.param("source=name", "", {"name": "photo.jpg"}, "photo.jpg | fit 300x", id="variable"),
        pytest.param("source='a&b.png'", "alt=name", {"name": "a&b"}, "a&b.png | fit 300x", id="literal"),
        pytest.param(
            "source=name", "", {"name": "default:photo.jpg"}, "default:photo.jpg | fit 300x", id="root-prefix"
        ),
    ],
)
def test_source_argument_prints_what_the_body_form_prints(env, source_argument, other, context, body_text):
    tag = "{% fileprocessor " + source_argument + " " + other + " %}fit 300x{% endfileprocessor %}"
    given = template(env, tag).render(context)
    tag = "{% fileprocessor " + other + " %}" + body_text + "{% endfileprocessor %}"
    assert given == template(env, tag, "b.html").render(context)
    assert given.startswith('<img src="/_fp/')


@pytest.mark.parametrize("value", [None, "", pytest.param(..., id="undefined")])
@pytest.mark.parametrize("strict", [True, False])
def test_an_empty_source_argument_renders_the_empty_branch(env, value, strict):
    env.fileprocessor_strict = strict
    context = {} if value is ... else {"photo": value}
    source = "{% fileprocessor source=photo %}fit 80x80{% empty %}-{% endfileprocessor %}"
    assert template(env, source).render(context) == "-"


def test_an_object_source_without_a_converter_is_a_clear_error(env):
    env.fileprocessor_strict = True
    page = template(env, "\n{% fileprocessor source=upload %}fit 80x80{% endfileprocessor %}")
    with pytest.raises(InstructionError) as caught:
        page.render(upload=_Upload("photo.jpg"))
    assert str(caught.value) == (
        "page.html, line 2, column 1, step 'source': source= expects a file field, a storage path "
        "or a source reference, got _Upload; pass its name as a string"
    )


def test_an_environment_converter_turns_objects_into_references(env, registrar):
    env.fileprocessor_source_reference = lambda value: getattr(value, "name", None)
    page = template(env, "{% fileprocessor source=upload %}fit 300x{% endfileprocessor %}")
    assert (
        page.render(upload=_Upload("photo.jpg"))
        == template(env, "{% fileprocessor %}photo.jpg | fit 300x{% endfileprocessor %}", "b.html").render()
    )


def test_strict_may_be_asked_at_each_render(env, caplog):
    debug = [True]
    env.fileprocessor_strict = lambda: debug[0]
    page = template(env, "{% fileprocessor %}photo.jpg | fit 10by{% empty %}bad{% endfileprocessor %}")
    with pytest.raises(InstructionError, match="expected a size like"):
        page.render()
    debug[0] = False
    assert page.render() == "bad"
    assert "expected a size like" in caplog.text


def test_densities_and_smart_gravity(env, registrar):
    page = template(
        env, '{% fileprocessor densities="1,2" %}photo.jpg | fill 200x200 gravity=smart{% endfileprocessor %}'
    )
    assert (
        page.render() == build(registrar, "photo.jpg | fill 200x200 gravity=smart", {"densities": "1,2"}).html
    )
    assert " 2x" in page.render()
