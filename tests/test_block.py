"""The shared meaning of a template block: attributes, srcset, picture, source=, densities=,
soft failures."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re

import pytest
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webob import Request

from fileproc_wsgi.block import Block, build, render_block
from fileproc_wsgi.errors import InstructionError, SourceError
from fileproc_wsgi.instructions import canonical_source, parse, source_step
from fileproc_wsgi.middleware import FileProcessor
from support import decode, halves, write


@pytest.fixture
def site(make_site):
    site = make_site()
    write(site.media, "photo.jpg", halves(1000, 600), quality=90)
    return site


def test_plain_block_is_an_escaped_img(site):
    rendition = build(site.registrar, "photo.jpg | fit 300x", {"alt": 'a "b" <c>', "class": "thumb"})
    assert rendition.html == (
        f'<img src="{rendition.url}" width="300" height="180" alt="a &quot;b&quot; &lt;c&gt;" '
        'loading="lazy" decoding="async" class="thumb">'
    )
    assert (rendition.width, rendition.height, rendition.content_type) == (300, 180, "image/jpeg")


def test_widths_above_the_result_give_way_to_the_result_itself(site):
    rendition = build(site.registrar, "photo.jpg | fit 900x", {"widths": "400,800,1200", "sizes": "50vw"})
    srcset = re.search(r'srcset="([^"]+)"', rendition.html).group(1)
    assert [item.split()[1] for item in srcset.split(", ")] == ["400w", "800w", "900w"]
    assert srcset.endswith(f"{rendition.url} 900w")
    assert 'sizes="50vw"' in rendition.html
    assert rendition.width == 900


def test_formats_give_a_picture_with_the_img_as_fallback(site):
    html = build(site.registrar, "photo.jpg | fit 500x", {"formats": "avif,webp", "widths": [250]}).html
    assert html.startswith('<picture><source type="image/avif" srcset="/_fp/')
    assert '<source type="image/webp"' in html and html.endswith("></picture>")
    assert re.search(r'<img src="/_fp/[0-9a-f]{32}\.jpg" width="500"', html)
    assert html.count(" 250w") == 3


def test_all_variants_are_registered_in_one_transaction(site):
    site.store.create_tables()
    commits = []
    sqlalchemy.event.listen(site.store.engine, "commit", lambda connection: commits.append(1))
    build(site.registrar, "photo.jpg | fit 500x", {"formats": "avif,webp", "widths": "100,200"})
    assert len(commits) == 1
    assert site.store.count_by_state() == {"pending": 9}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"widths": "wide"}, "widths= expects whole numbers", id="bad-width"),
        pytest.param({"formats": "bmp"}, "formats= expects some of", id="bad-format"),
        pytest.param({"widths": ""}, None, id="empty-widths-ignored"),
    ],
)
def test_bad_arguments(site, arguments, message):
    if message is None:
        assert build(site.registrar, "photo.jpg", arguments).html.startswith("<img")
        return
    with pytest.raises(InstructionError, match=message):
        build(site.registrar, "photo.jpg", arguments)


def test_soft_failures(site, caplog):
    assert render_block(site.registrar, "missing.jpg | fit 10x", {}, strict=True) is None
    assert "source 'missing.jpg' does not exist" in caplog.text
    assert render_block(site.registrar, "photo.jpg | fit 10by", {}, strict=False) is None
    with pytest.raises(InstructionError, match="line 1, column 17"):
        render_block(site.registrar, "photo.jpg | fit 10by", {}, strict=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("archive:photo.jpg | fit 10x", "unknown root 'archive'", id="unknown-root"),
        pytest.param("../photo.jpg | fit 10x", "'..' is not allowed", id="parent"),
        pytest.param("https://example.com/a.jpg | fit 10x", "https sources are not enabled", id="host"),
    ],
)
def test_a_refused_reference_raises_when_strict_and_fails_softly_otherwise(site, caplog, text, message):
    # The template's mistake, like bad text: a developer sees it; a visitor never does.
    with pytest.raises(SourceError, match=rf"^page.html, line 3: .*{re.escape(message)}"):
        render_block(site.registrar, text, {}, strict=True, where="page.html", line=3)
    assert render_block(site.registrar, text, {}, strict=False) is None
    assert message in caplog.text


def test_an_unexpected_error_renders_the_empty_branch_and_is_logged(site, monkeypatch, caplog):
    write(site.media, "photo.jpg", halves(40, 20))

    def broken(text):
        raise RuntimeError("a library bug")

    monkeypatch.setattr(site.registrar, "register", broken)
    monkeypatch.setattr(site.registrar, "register_many", lambda texts: broken(texts))
    assert render_block(site.registrar, "photo.jpg | fit 10x", {}, strict=True) is None
    assert "a library bug" in caplog.text


def test_a_page_of_new_thumbnails_costs_one_commit(site):
    site.store.create_tables()
    commits = []
    sqlalchemy.event.listen(site.store.engine, "commit", lambda connection: commits.append(1))

    def page(environ, start_response):
        tags = [site.registrar.register(f"photo.jpg | fit {width}x").html for width in range(10, 110)]
        assert commits == [], "nothing is written while the page renders"
        start_response("200 OK", [("Content-Type", "text/html")])
        return ["\n".join(tags).encode()]

    # Made on request only: what the page's batch starts in the background is tested apart.
    app = FileProcessor(page, dataclasses.replace(site.config, background_jobs=0), registrar=site.registrar)
    response = Request.blank("/").get_response(app)
    assert response.text.count("<img") == 100
    assert len(commits) == 1
    assert site.store.count_by_state() == {"pending": 100}
    first = re.search(r'src="([^"]+)"', response.text).group(1)
    assert Request.blank(first).get_response(app).status_int == 301


def test_a_failed_batch_write_is_forgotten_and_retried(site, monkeypatch):
    def outage(rows):
        from fileproc_wsgi.errors import UnavailableError

        raise UnavailableError("database unavailable: test")

    with monkeypatch.context() as patch:
        patch.setattr(site.store, "add_new", outage)
        with pytest.raises(Exception, match="database unavailable"), site.registrar.batch():
            site.registrar.register("photo.jpg | fit 50x")
    assert site.store.count_by_state() == {}
    site.registrar.register("photo.jpg | fit 50x")
    assert site.store.count_by_state() == {"pending": 1}


def test_html_is_marked_as_already_escaped(site):
    rendition = build(site.registrar, "photo.jpg | fit 300x", {"alt": "<b>"})
    for html in (rendition.html, str(rendition), rendition.__html__(), rendition.image.html):
        assert html.__html__() == html, "Django and Jinja2 print it without escaping it again"
    assert "&lt;b&gt;" in rendition.html


def test_a_picture_without_widths_offers_each_format_at_the_img_size(site):
    html = build(site.registrar, "photo.jpg | fit 300x", {"formats": "avif"}).html
    source = re.search(r'<source type="image/avif" srcset="([^"]+)">', html).group(1)
    assert re.fullmatch(r"/_fp/[0-9a-f]{32}\.avif", source), "a bare URL: no width descriptor, no sizes"


@pytest.mark.parametrize(
    ("names", "first", "second", "expected"),
    [
        pytest.param(["alt"], ["a"], ["a"], "the same rendition", id="same-values"),
        pytest.param(["alt"], ["a"], ["b"], "another html", id="other-value"),
        pytest.param(["hidden"], [True], [1], "another html", id="true-is-not-1"),
        pytest.param(["data-n"], [1], [1.0], "another html", id="1-is-not-1.0"),
        pytest.param(["widths"], [[100, 200]], [[100, 200]], "an equal one", id="unhashable"),
        pytest.param(["alt"], [object()], [object()], "an equal one", id="untrusted-object"),
    ],
)
def test_a_warm_block_reuses_what_it_printed(site, names, first, second, expected):
    block = Block(names)
    one = block.render(site.registrar, "photo.jpg | fit 300x", first, strict=True)
    two = block.render(site.registrar, "photo.jpg | fit 300x", second, strict=True)
    if expected == "the same rendition":
        assert one is two
    elif expected == "another html":
        assert one.html != two.html
    else:
        assert one is not two and one.html.split(" alt=")[0] == two.html.split(" alt=")[0]


def test_a_warm_block_follows_a_replaced_or_deleted_source(make_site):
    site = make_site(source_check_interval=0)
    write(site.media, "photo.jpg", halves(1000, 600))
    block = Block(["alt"], where="page.html", line=3)
    before = block.render(site.registrar, "photo.jpg | fit 300x", ["a"], strict=True)
    write(site.media, "photo.jpg", halves(600, 600))
    os.utime(site.media / "photo.jpg", ns=(1, 10**9))
    after = block.render(site.registrar, "photo.jpg | fit 300x", ["a"], strict=True)
    assert (before.height, after.height) == (180, 300)
    (site.media / "photo.jpg").unlink()
    assert block.render(site.registrar, "photo.jpg | fit 300x", ["a"], strict=True) is None


def test_a_warm_block_answers_each_registrar_with_its_own(make_site, tmp_path):
    first = make_site()
    write(first.media, "photo.jpg", halves(1000, 600))
    other = make_site(prefix="/other", database_url=f"sqlite:///{tmp_path / 'other.db'}")
    block = Block([])
    one = block.render(first.registrar, "photo.jpg | fit 300x", [], strict=True)
    two = block.render(other.registrar, "photo.jpg | fit 300x", [], strict=True)
    assert one.url.startswith("/_fp/") and two.url.startswith("/other/")
    assert block.render(first.registrar, "photo.jpg | fit 300x", [], strict=True).url == one.url


def test_a_block_names_its_template_and_line_in_errors(site):
    block = Block([], where="gallery.html", line=12)
    with pytest.raises(InstructionError, match=r"^gallery.html, line 13, column 5, step 'fit':"):
        block.render(site.registrar, "photo.jpg\nfit 10by", [], strict=True)
    assert block.render(site.registrar, "photo.jpg\nfit 10by", [], strict=False) is None


def test_a_width_equal_to_the_result_is_the_result_itself(site):
    rendition = build(site.registrar, "photo.jpg | fit 400x", {"widths": "200,400", "formats": "webp"})
    assert [variant.width for variant in rendition.srcset] == [200, 400]
    assert rendition.srcset[-1] is rendition.image, "not a second, identical variant to process"
    ((content_type, variants),) = rendition.sources
    assert variants[-1].url.endswith(".webp") and variants[-1].width == 400


# --------------------------------------------------------------------------- source=


class _Field:
    """A stand-in for a framework's file value: a name, false when it holds no file."""

    def __init__(self, name: str):
        self.name = name

    def __bool__(self) -> bool:
        return bool(self.name)


def _reference_of(value):
    return f"default:{value.name}" if isinstance(value, _Field) else None


def test_source_argument_means_the_same_as_a_source_in_the_body(site):
    given = build(site.registrar, "fit 300x", {"source": "photo.jpg", "alt": "a"})
    written = build(site.registrar, "photo.jpg | fit 300x", {"alt": "a"})
    assert given.html == written.html
    assert build(site.registrar, "", {"source": "photo.jpg"}).width == 1000, "operations may be none"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty-string"),
        pytest.param("   ", id="blank-string"),
        pytest.param(_Field(""), id="empty-field"),
        pytest.param(0, id="zero"),
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_an_empty_source_is_the_empty_branch_without_a_warning(site, caplog, value, strict):
    block = Block(["source", "alt"], where="profile.html", line=4)
    assert block.render(site.registrar, "fit 180x180", [value, "me"], strict=strict) is None
    assert render_block(site.registrar, "fit 10x", {"source": value}, strict=strict) is None
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert site.store.count_by_state() == {}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(" | fit 180x180", id="pipe-first"),
        pytest.param("|fit 180x180", id="pipe-at-once"),
        pytest.param("\n   | fill 10x10\n  format webp\n", id="multiline"),
        pytest.param("source  | fit 180x180", id="source-word-without-name"),
        pytest.param("source \n  fit 180x180", id="source-word-alone-on-its-line"),
        pytest.param("# the author's photo\n | fit 180x180", id="comment-first"),
        pytest.param("\n  # the author's photo\n\n   |fit 180x180", id="blank-lines-and-comment-first"),
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_a_body_whose_source_printed_nothing_is_the_empty_branch(site, caplog, text, strict):
    assert Block([]).render(site.registrar, text, [], strict=strict) is None
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\n\n  fit 180x180", id="blank-line-then-operations"),
        pytest.param("# the author's photo\nfit 180x180", id="comment-then-operations"),
    ],
)
def test_a_source_line_that_printed_nothing_is_an_error_suggesting_source_argument(site, caplog, text):
    """A first line of operations alone may be a forgotten source as well as an empty
    one: only source= or a source on the operations' line makes a source optional."""
    block = Block([], where="card.html", line=3)
    with pytest.raises(InstructionError, match=r"^card.html, line \d+, .*pass it as source= on the tag"):
        block.render(site.registrar, text, [], strict=True)
    assert block.render(site.registrar, text, [], strict=False) is None
    assert "expected a source first" in caplog.text


def test_a_body_starting_with_an_operation_suggests_source_argument(site):
    with pytest.raises(InstructionError, match=r"expected a source first .* pass it as source= on the tag"):
        Block([]).render(site.registrar, "fit 180x180", [], strict=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "/media/photo.jpg",
            "source= got '/media/photo.jpg', an absolute path or URL; give a path relative to a "
            "source root, or the file object itself",
            id="url-path",
        ),
        pytest.param("  /srv/media/photo.jpg", "an absolute path or URL", id="absolute-path"),
        pytest.param(
            pathlib.PurePosixPath("photo.jpg"),
            "source= expects a file field, a storage path or a source reference, got PurePosixPath; "
            "pass its name as a string",
            id="object-without-converter",
        ),
        pytest.param("a\nb.jpg", "source= got 'a\\nb.jpg', a name with a line break", id="newline"),
        pytest.param("./", "source= got './': expected a source reference", id="no-name"),
    ],
)
def test_a_wrong_source_argument_is_named(site, caplog, value, message):
    block = Block(["source"], where="card.html", line=7)
    with pytest.raises(InstructionError) as caught:
        block.render(site.registrar, "fit 10x", [value], strict=True)
    assert str(caught.value).startswith("card.html, line 7, column 1, step 'source': ")
    assert message in caught.value.problem
    assert block.render(site.registrar, "fit 10x", [value], strict=False) is None
    assert message in caplog.text


def test_a_converter_turns_a_field_into_its_reference(site):
    block = Block(["source"])
    rendition = block.render(
        site.registrar, "fit 300x", [_Field("photo.jpg")], strict=True, reference_of=_reference_of
    )
    assert rendition.html == build(site.registrar, "default:photo.jpg | fit 300x", {}).html
    again = block.render(
        site.registrar, "fit 300x", [_Field("photo.jpg")], strict=True, reference_of=_reference_of
    )
    assert again is rendition, "a new field object with the same file is the same rendering"
    with pytest.raises(
        InstructionError, match="expects a file field, a storage path or a source reference, got int$"
    ):
        block.render(site.registrar, "fit 300x", [7], strict=True, reference_of=_reference_of)


def test_a_converter_that_fails_is_reported_like_the_block(site, caplog):
    def refuses(value):
        raise InstructionError("no source root serves this storage", line=1, column=1, step="source")

    block = Block(["source"], where="x.html", line=2)
    with pytest.raises(InstructionError, match=r"^x.html, line 2, column 1, step 'source': no source root"):
        block.render(site.registrar, "fit 10x", [_Field("photo.jpg")], strict=True, reference_of=refuses)
    assert block.render(site.registrar, "fit 10x", [_Field("a")], strict=False, reference_of=refuses) is None
    assert "no source root serves this storage" in caplog.text


@pytest.mark.parametrize(
    ("body", "position", "message"),
    [
        pytest.param(
            "photo.jpg | fit 10x",
            "line 3, column 1, step 'source'",
            "source= is given, so the body holds only operations; line 1 starts with 'photo.jpg'",
            id="a-second-source",
        ),
        pytest.param(
            "\n  source photo.jpg",
            "line 4, column 3, step 'source'",
            "line 2 starts with 'source'",
            id="source-word",
        ),
        pytest.param(
            "fit 10x\nfit 10by", "line 4, column 5, step 'fit'", "expected a size like", id="body-lines-kept"
        ),
    ],
)
def test_with_source_argument_errors_point_into_the_body(site, body, position, message):
    block = Block(["source"], where="page.html", line=3)
    with pytest.raises(InstructionError) as caught:
        block.render(site.registrar, body, ["photo.jpg"], strict=True)
    assert str(caught.value).startswith(f"page.html, {position}: ")
    assert message in caught.value.problem


_NAMES = st.text(st.characters(codec="utf-8", exclude_characters="/\x00\n"), min_size=1, max_size=24).filter(
    # Surrounding spaces are trimmed from any reference; sources refuse "\\..." as absolute.
    lambda name: name == name.strip() and name not in (".", "..") and not name.startswith("\\")
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_NAMES)
def test_any_file_name_reaches_its_file_through_source_argument(site, name):
    # Quotes, '|', '#', '=', backslashes and spaces in a name are all quoted by the core.
    write(site.media, name, halves(40, 20), format="PNG")
    rendition = build(site.registrar, "fit 20x", {"source": f"default:{name}"})
    assert (rendition.width, rendition.height) == (20, 10)
    assert parse(f"{source_step(name)}\nfit 20x").source == canonical_source(name)


# --------------------------------------------------------------------------- densities=


def test_densities_print_a_srcset_of_sharper_variants(site):
    rendition = build(site.registrar, "photo.jpg | fit 300x", {"densities": "1, 2x, 1.5"})
    srcset = re.search(r'srcset="([^"]+)"', rendition.html).group(1)
    assert [item.split()[1] for item in srcset.split(", ")] == ["1x", "1.5x", "2x"]
    assert srcset.startswith(f"{rendition.url} 1x, "), "src is the 1x, and the 1x is in the srcset"
    assert "sizes=" not in rendition.html, "sizes is for width descriptors only"
    assert [variant.width for variant in rendition.srcset] == [300, 450, 600]
    assert rendition.srcset[2].url == build(site.registrar, "photo.jpg | fit 600x", {}).url


def test_a_density_the_source_cannot_reach_is_dropped(site):
    rendition = build(site.registrar, "photo.jpg | fill 400x300", {"densities": [1, 2, 3]})
    assert rendition.densities == (1.0, 2.0), "3x would need 1200 pixels of a 1000-pixel photo"
    alone = build(site.registrar, "photo.jpg | fit 900x", {"densities": "2"})
    assert "srcset" not in alone.html and alone.width == 900, "1x alone is a plain <img>"


def test_densities_with_formats_give_each_source_a_density_srcset(site):
    html = build(site.registrar, "photo.jpg | fit 200x", {"densities": "1,2", "formats": "webp"}).html
    source = re.search(r'<source type="image/webp" srcset="([^"]+)">', html).group(1)
    assert re.fullmatch(r"/_fp/[0-9a-f]{32}\.webp 1x, /_fp/[0-9a-f]{32}\.webp 2x", source)
    assert re.search(
        r'<img src="/_fp/[0-9a-f]{32}\.jpg" width="200" height="120" [^>]*srcset="[^"]+ 2x"', html
    )


def test_a_2x_variant_is_made_at_twice_the_size(site):
    rendition = build(
        site.registrar, "photo.jpg | crop 0,0,500,600 | fill 100x60 | blur 1", {"densities": "2"}
    )
    (one, two) = rendition.srcset
    for variant, size in ((one, (100, 60)), (two, (200, 120))):
        response = site.get(variant.url)
        assert response.status_int == 301
        assert decode(site.get(response.location).body).size == size == (variant.width, variant.height)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(
            {"densities": "1,2", "widths": "100,200"},
            "densities= and widths= cannot be combined",
            id="with-widths",
        ),
        pytest.param(
            {"densities": "5"},
            "densities= expects numbers from 1 to 4, like 1,2 or 1x,2x, got '5'",
            id="too-dense",
        ),
        pytest.param({"densities": "0.5x"}, "got '0.5x'", id="below-1"),
        pytest.param({"densities": "retina"}, "got 'retina'", id="not-a-number"),
        pytest.param({"densities": "nan"}, "got 'nan'", id="nan"),
        pytest.param({"densities": "1,1.5,2,3,4"}, "takes at most 4 densities, got 5", id="too-many"),
    ],
)
def test_bad_densities(site, arguments, message):
    with pytest.raises(InstructionError, match=re.escape(message)):
        build(site.registrar, "photo.jpg | fit 100x", arguments)


def test_a_warm_block_with_densities_is_reused(site):
    block = Block(["densities"])
    one = block.render(site.registrar, "photo.jpg | fit 100x", ["1,2"], strict=True)
    assert block.render(site.registrar, "photo.jpg | fit 100x", ["1,2"], strict=True) is one


def test_a_format_named_twice_is_one_source(site):
    once = build(site.registrar, "photo.jpg | fit 100x", {"formats": "webp,avif"})
    twice = build(site.registrar, "photo.jpg | fit 100x", {"formats": "webp, avif,webp,WEBP"})
    assert twice.html == once.html
    assert once.html.count("<source ") == 2
    jpeg = build(site.registrar, "photo.jpg | fit 100x", {"formats": "jpg,jpeg"})
    assert jpeg.html.count('<source type="image/jpeg"') == 1
