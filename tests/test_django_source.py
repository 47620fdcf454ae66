"""``{% fileprocessor source=... %}`` in Django templates: what to pass for a model's
image field, and what an empty field, None, "", a missing file or the field's ``.url``
or ``.path`` passed by mistake print, with ``DEBUG`` on and off (issue 11, items 1 and 2).
"""

from __future__ import annotations

import logging
import pathlib
import re

import pytest

from django_support import decode, fetch, images, jpeg, photo, render, settings_for, site, wrapped
from fileproc_wsgi import InstructionError

BLOCK = "{% fileprocessor source=SOURCE %}fit 100x100{% empty %}<i>no photo</i>{% endfileprocessor %}"


def block(source: str) -> str:
    return BLOCK.replace("SOURCE", source)


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request):
    return request.param


@pytest.fixture
def filesystem(tmp_path):
    return settings_for("filesystem")


def test_a_field_prints_an_img_of_the_promised_size(tmp_path, filesystem, debug):
    with site(tmp_path, filesystem, debug=debug):
        html = render(block("item.image"), {"item": photo("holiday.jpg", (600, 400))})
    [(url, width, height)] = images(html)
    assert (width, height) == (100, 67)
    assert url.startswith("/_fp/")


@pytest.mark.parametrize(
    ("source", "context"),
    [
        pytest.param("item.image", {"item": "EMPTY"}, id="empty-image-field"),
        pytest.param("nothing", {"nothing": None}, id="none"),
        pytest.param("blank", {"blank": ""}, id="empty-string"),
        pytest.param("undefined", {}, id="undefined-variable"),
    ],
)
def test_nothing_to_show_prints_the_empty_branch_without_a_warning(
    tmp_path, filesystem, debug, caplog, source, context
):
    with site(tmp_path, filesystem, debug=debug), caplog.at_level(logging.WARNING):
        context = {key: photo(name="") if value == "EMPTY" else value for key, value in context.items()}
        assert render(block(source), context) == "<i>no photo</i>"
        assert render(block(source).replace("{% empty %}<i>no photo</i>", ""), context) == ""
        thumb = "{% fileprocessor as thumb source=SOURCE %}fit 9x9{% endfileprocessor %}[{{ thumb }}]"
        assert render(thumb.replace("SOURCE", source), context) == "[None]"
    assert caplog.records == [], "an optional field left empty is not a fault"


def test_a_file_missing_from_the_storage_prints_the_empty_branch_and_is_logged(
    tmp_path, filesystem, debug, caplog
):
    with site(tmp_path, filesystem, debug=debug), caplog.at_level(logging.WARNING):
        item = photo("gone.jpg")
        item.image.storage.delete(item.image.name)
        assert render(block("item.image"), {"item": item}) == "<i>no photo</i>"
    assert "media:photos/gone.jpg" in caplog.text
    assert "does not exist" in caplog.text


@pytest.mark.parametrize(
    ("expression", "media_url", "message"),
    [
        pytest.param(
            "item.image.url",
            "/media/",
            "source=item.image.url gave the file's url '/media/photos/a.jpg'; "
            "pass the file field itself (source=item.image), not its .url",
            id="url",
        ),
        pytest.param(
            "item.image.url",
            "https://cdn.example.com/media/",
            "source=item.image.url gave the file's url 'https://cdn.example.com/media/photos/a.jpg'; "
            "pass the file field itself (source=item.image), not its .url",
            id="absolute-media-url",
        ),
        pytest.param(
            "item.image.path",
            "/media/",
            "source=item.image.path gave the file's path; pass the file field itself "
            "(source=item.image), not its .path",
            id="path",
        ),
        pytest.param(
            "address",
            "/media/",
            "source=address gave the file's url '/media/photos/a.jpg'; "
            "pass the file field itself (source=photo.image), not its .url",
            id="url-in-a-variable",
        ),
    ],
)
def test_a_fields_url_or_path_is_a_clear_error_with_debug_and_the_empty_branch_without(
    tmp_path, caplog, expression, media_url, message
):
    for debug in (True, False):
        base = tmp_path / f"debug-{debug}"
        base.mkdir()
        settings = {**settings_for("filesystem"), "MEDIA_URL": media_url}
        with site(base, settings, debug=debug), caplog.at_level(logging.WARNING):
            item = photo("a.jpg")
            context = {"item": item, "address": item.image.url}
            if debug:
                with pytest.raises(InstructionError) as raised:
                    render(block(expression), context)
                assert str(raised.value).endswith(message)
                assert "page.html, line 1" in str(raised.value)
            else:
                assert render(block(expression), context) == "<i>no photo</i>"
                assert message in caplog.text
                assert str(tmp_path) not in caplog.text, "a message never shows the server's directories"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("media:photos/a.jpg", id="reference"),
        # site() names only a "media" root: the default storage stays the default root.
        pytest.param("photos/a.jpg", id="path-in-the-default-storage"),
    ],
)
def test_a_string_is_a_source_reference(tmp_path, filesystem, value):
    with site(tmp_path, filesystem, debug=True):
        photo("a.jpg")
        html = render(block("reference"), {"reference": value})
    assert [(width, height) for _, width, height in images(html)] == [(100, 67)]


def test_a_root_for_one_fields_storage_keeps_the_default_storage(tmp_path, filesystem):
    # What the error for a field no root serves tells a project without FILEPROCESSOR to write.
    with site(tmp_path, filesystem, debug=True, source_roots={"photo": "django:django_photos.Photo.image"}):
        item = photo("a.jpg")
        html = render(block("item.image") + block('"photos/a.jpg"'), {"item": item})
    assert [(width, height) for _, width, height in images(html)] == [(100, 67), (100, 67)]


@pytest.mark.parametrize(
    ("value", "roots", "message"),
    [
        pytest.param(
            "archive:2019/a.jpg",
            {},
            "source=reference gave 'archive:2019/a.jpg': no source root 'archive' (roots: default, media); "
            'add it to FILEPROCESSOR["source_roots"]',
            id="unknown-root",
        ),
        pytest.param(
            "media:../secret.jpg",
            {},
            "source=reference gave 'media:../secret.jpg': '..' is not allowed in a source path",
            id="dot-dot",
        ),
        pytest.param(
            "old:a.jpg",
            {"old": "django:nosuchalias"},
            "source=reference gave 'old:a.jpg': source root 'django:nosuchalias': "
            "expected an alias of STORAGES",
            id="broken-django-root",
        ),
    ],
)
def test_a_reference_the_settings_cannot_serve_is_an_error_with_debug(
    tmp_path, caplog, value, roots, message
):
    for debug in (True, False):
        base = tmp_path / f"debug-{debug}"
        base.mkdir()
        source_roots = {"media": "django:default", **roots}
        with site(base, settings_for("filesystem"), debug=debug, source_roots=source_roots):
            photo("a.jpg")
            if debug:
                with pytest.raises(InstructionError) as raised:
                    render(block("reference"), {"reference": value})
                assert message in str(raised.value)
            else:
                with caplog.at_level(logging.WARNING):
                    assert render(block("reference"), {"reference": value}) == "<i>no photo</i>"
                assert message in caplog.text


def test_what_a_string_source_is_checked_against_follows_the_settings(tmp_path):
    # The check of a string source is remembered per configuration: a root added or taken
    # away by a settings change is seen by the next render, not by a restart.
    with site(
        tmp_path / "with", settings_for("filesystem"), debug=True, source_roots={"old": "django:default"}
    ):
        photo("a.jpg")
        assert render(block("reference"), {"reference": "old:photos/a.jpg"}).startswith("<img ")
    with (
        site(tmp_path / "without", settings_for("filesystem"), debug=True),
        pytest.raises(InstructionError) as raised,
    ):
        render(block("reference"), {"reference": "old:photos/a.jpg"})
    assert "no source root 'old'" in str(raised.value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param(
            "item.image.url",
            "source=item.image.url raised ValueError: The 'image' attribute has no file associated "
            "with it; pass the file field itself (source=item.image), not its .url",
            id="url",
        ),
        pytest.param(
            "item.image.path",
            "source=item.image.path raised ValueError: The 'image' attribute has no file associated "
            "with it; pass the file field itself (source=item.image), not its .path",
            id="path",
        ),
        pytest.param("item.broken", "source=item.broken raised RuntimeError: out of order", id="property"),
    ],
)
def test_a_source_that_raises_is_an_error_with_debug_and_the_empty_branch_without(
    tmp_path, filesystem, caplog, expression, message
):
    # The commonest mistake on the commonest page: an optional field left empty, and its .url.
    item = type(
        "Item", (), {"broken": property(lambda self: (_ for _ in ()).throw(RuntimeError("out of order")))}
    )()
    for debug in (True, False):
        with site(tmp_path / f"debug-{debug}", filesystem, debug=debug):
            item.image = photo(name="").image
            if debug:
                with pytest.raises(InstructionError) as raised:
                    render(block(expression), {"item": item})
                assert message in str(raised.value)
                assert "page.html, line 1" in str(raised.value)
            else:
                with caplog.at_level(logging.WARNING):
                    assert render(block(expression), {"item": item}) == "<i>no photo</i>"
                assert message in caplog.text


def test_any_other_argument_that_raises_is_djangos_error_with_debug_and_the_empty_branch_without(
    tmp_path, filesystem, caplog
):
    source = (
        "{% fileprocessor source=item.image alt=item.title %}fit 10x{% empty %}none{% endfileprocessor %}"
    )
    body = "{% fileprocessor source=item.image %}fit {{ item.title }}x{% empty %}none{% endfileprocessor %}"
    item = type("Item", (), {"title": property(lambda self: 1 / 0)})()
    with site(tmp_path, filesystem, debug=True):
        item.image = photo("a.jpg").image
        for template in (source, body):
            with pytest.raises(ZeroDivisionError):
                render(template, {"item": item})
    with site(tmp_path, filesystem, debug=False), caplog.at_level(logging.WARNING):
        for template in (source, body):
            assert render(template, {"item": item}) == "none"
    assert caplog.text.count("ZeroDivisionError") == 2


def test_a_source_in_the_body_keeps_working(tmp_path, filesystem):
    with site(tmp_path, filesystem, debug=True):
        item = photo("a.jpg")
        html = render(
            "{% fileprocessor %}media:{{ item.image.name }} | fit 50x50{% endfileprocessor %}", {"item": item}
        )
    assert [(width, height) for _, width, height in images(html)] == [(50, 33)]


def test_a_file_name_with_spaces_and_quotes(tmp_path, filesystem):
    with site(tmp_path, filesystem, debug=True):
        item = photo(name="")
        name = item.image.storage.save('photos/my cat\'s "best" | #1.jpg', jpeg(300, 100))
        item.image.name = name
        html = render(block("item.image"), {"item": item})
    assert [(width, height) for _, width, height in images(html)] == [(100, 33)]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "item",
            "source= expects a file field, a storage path or a source reference, got Photo",
            id="model",
        ),
        pytest.param("number", "source= expects a file field", id="number"),
    ],
)
def test_anything_else_is_an_error_with_debug(tmp_path, filesystem, source, message):
    with site(tmp_path, filesystem, debug=True), pytest.raises(InstructionError, match=message):
        render(block(source), {"item": photo("a.jpg"), "number": 7})


def test_a_source_in_the_body_as_well_as_source_is_an_error_with_debug(tmp_path, filesystem):
    with site(tmp_path, filesystem, debug=True), pytest.raises(InstructionError, match="source= is given"):
        render(
            "{% fileprocessor source=item.image %}media:photos/a.jpg | fit 10x{% endfileprocessor %}",
            {"item": photo("a.jpg")},
        )


DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "django.md"


def _documented_blocks() -> list[str]:
    # Table cells escape "|" as "\|"; the HTML comments hold no examples.
    text = re.sub(r"<!--.*?-->", "", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL).replace("\\|", "|")
    return re.findall(r"\{% fileprocessor[^`]*?\{% endfileprocessor %\}", text)


def test_the_django_page_has_examples():
    assert len(_documented_blocks()) >= 15


@pytest.mark.parametrize(
    "source", [pytest.param(block, id=f"example-{n}") for n, block in enumerate(_documented_blocks(), 1)]
)
def test_every_block_in_the_django_page_renders_with_debug(tmp_path, source):
    """Each example of docs/django.md, as written, with a photo and a user with no avatar."""
    with site(tmp_path, settings_for("filesystem"), debug=True, source_roots={"default": "django:default"}):
        item = photo("holiday.jpg", (1200, 800), title="Hills & sun")
        item.slug = "holiday"
        user = {"username": "ada", "profile": {"avatar": photo(name="").image}}
        document = _document("logo.svg", _SVG)
        html = render(source, {"photo": item, "user": user, "document": document})
    if " as " in source:
        assert html == ""
    elif "user.profile.avatar" in source:
        assert html.strip() == '<span class="initials">A</span>'
    else:
        assert images(html), html


_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
    b'<rect width="200" height="100" fill="#0000ff"/></svg>'
)


def _document(name: str, data: bytes):
    """A Document (not saved in any database) whose FileField is saved through its storage."""
    from django.core.files.base import ContentFile

    from django_photos.models import Document

    document = Document()
    document.file.save(name, ContentFile(data), save=False)
    return document


def test_an_svg_in_a_file_field_is_drawn_where_an_image_field_would_refuse_its_upload(tmp_path, filesystem):
    """docs/django.md: keep SVGs (and office documents) in a FileField; source= takes it."""
    from django import forms
    from django.core.files.uploadedfile import SimpleUploadedFile

    # What a site meets first: Django's ImageField validates an upload with Pillow.
    with pytest.raises(forms.ValidationError):
        forms.ImageField().clean(SimpleUploadedFile("logo.svg", _SVG, "image/svg+xml"))
    assert forms.FileField().clean(SimpleUploadedFile("logo.svg", _SVG, "image/svg+xml"))

    with site(tmp_path, filesystem, debug=True):
        html = render(block("item.file"), {"item": _document("logo.svg", _SVG)})
        [(url, width, height)] = images(html)
        assert (width, height) == (100, 50)
        status, response = fetch(wrapped(), url)
    assert (status, response.status_int) == (301, 200)
    image = decode(response.body)
    assert image.size == (100, 50)
    assert image.convert("RGB").getpixel((50, 25)) == (0, 0, 255)
