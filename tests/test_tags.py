"""The shared meaning of a template block: attributes, srcset, picture, soft failures."""

from __future__ import annotations

import os
import re

import pytest
import sqlalchemy
from webob import Request

from fileproc_wsgi.errors import InstructionError
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.tags import Block, build, render_block
from support import halves, write


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

    app = FileProcessor(page, site.config, registrar=site.registrar)
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
        patch.setattr(site.store, "add_many", outage)
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
