"""Every image operation and output format, checked by decoding what the browser gets.

Each case registers instructions, requests the URL the registrar printed, follows the
redirect, decodes the bytes and checks size, mode and format, and that the size the
registrar predicted at render time is the size that was made.
"""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from fileproc_wsgi.errors import FileProcError, LimitError
from fileproc_wsgi.operations import attention_box
from support import BLUE, GREEN, RED, close_to, colour_at, halves, srgb_profile, write


def _phone(directory):
    # Stored 600x400 with a red top-left corner; orientation 6 shows it turned clockwise.
    image = Image.new("RGB", (600, 400), BLUE)
    ImageDraw.Draw(image).rectangle([0, 0, 100, 100], fill=RED)
    exif = Image.Exif()
    exif[0x0112] = 6
    write(directory, "phone.jpg", image, exif=exif, quality=95)


def _logo(directory):
    image = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle([100, 100, 300, 300], fill=GREEN + (255,))
    write(directory, "logo.png", image)


def _sources(directory):
    write(directory, "photo.jpg", halves(), quality=95)
    write(directory, "photo.png", halves())
    _phone(directory)
    _logo(directory)
    palette = Image.new("P", (200, 100), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    write(directory, "palette.png", palette, transparency=0)
    write(directory, "grey16.png", Image.linear_gradient("L").resize((256, 128)).convert("I;16"))
    write(directory, "cmyk.jpg", Image.new("CMYK", (300, 200), (0, 255, 255, 0)))
    frames = [Image.new("RGB", (120, 80), colour) for colour in (RED, BLUE)]
    write(directory, "animated.gif", frames[0], save_all=True, append_images=frames[1:])
    pages = [Image.new("L", (300, 400), shade) for shade in (30, 220)]
    write(directory, "scan.tiff", pages[0], save_all=True, append_images=pages[1:])
    write(directory, "photo.bmp", halves(90, 60))
    write(
        directory,
        "with-profile.jpg",
        halves(),
        icc_profile=srgb_profile(),
        quality=90,
        exif=_exif_with_camera(),
    )


def _exif_with_camera() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Test Camera Maker"
    return exif


@pytest.fixture
def made(site):
    _sources(site.media)
    return site.make


CASES = [
    # id, instructions, (width, height), mode, format
    pytest.param("photo.jpg | fit 300x300", (300, 200), "RGB", "JPEG", id="fit-box"),
    pytest.param("photo.jpg | fit 150x", (150, 100), "RGB", "JPEG", id="fit-width-only"),
    pytest.param("photo.jpg | fit x100", (150, 100), "RGB", "JPEG", id="fit-height-only"),
    pytest.param("photo.jpg | fit 1200x1200", (600, 400), "RGB", "JPEG", id="fit-never-enlarges"),
    pytest.param("photo.jpg | upscale | fit 1200x1200", (1200, 800), "RGB", "JPEG", id="fit-upscale"),
    pytest.param("photo.jpg | fill 200x200", (200, 200), "RGB", "JPEG", id="fill"),
    pytest.param("photo.jpg | fill 800x800", (400, 400), "RGB", "JPEG", id="fill-small-source-keeps-aspect"),
    pytest.param("photo.jpg | fill 800x800 | upscale", (800, 800), "RGB", "JPEG", id="fill-upscale"),
    pytest.param("photo.jpg | pad 300x300", (300, 300), "RGB", "JPEG", id="pad"),
    pytest.param("logo.png | pad 500x300", (500, 300), "RGBA", "PNG", id="pad-transparent"),
    pytest.param("photo.jpg | resize 123x45", (123, 45), "RGB", "JPEG", id="resize-ignores-aspect"),
    pytest.param("photo.jpg | crop 10,20,100,50", (100, 50), "RGB", "JPEG", id="crop-pixels"),
    pytest.param("photo.jpg | crop 0%,0%,50%,25%", (300, 100), "RGB", "JPEG", id="crop-percent"),
    pytest.param("photo.jpg | crop 500,300,400,400", (100, 100), "RGB", "JPEG", id="crop-clipped-to-image"),
    pytest.param("photo.jpg | rotate 90", (400, 600), "RGB", "JPEG", id="rotate-right-angle"),
    pytest.param("photo.jpg | fit 200x | rotate 30", None, "RGB", "JPEG", id="rotate-any-angle"),
    pytest.param("photo.jpg | flip vertical", (600, 400), "RGB", "JPEG", id="flip"),
    pytest.param("photo.jpg | grayscale", (600, 400), "L", "JPEG", id="grayscale"),
    pytest.param("logo.png | grayscale", (400, 400), "LA", "PNG", id="grayscale-keeps-alpha"),
    pytest.param("photo.jpg | blur 3", (600, 400), "RGB", "JPEG", id="blur"),
    pytest.param("photo.jpg | sharpen 2", (600, 400), "RGB", "JPEG", id="sharpen"),
    pytest.param("logo.png | background #00ff00", (400, 400), "RGB", "PNG", id="background-flattens"),
    pytest.param("photo.jpg | fit 100x | format png", (100, 67), "RGB", "PNG", id="format-png"),
    pytest.param("photo.jpg | fit 100x | format webp", (100, 67), "RGB", "WEBP", id="format-webp"),
    pytest.param("photo.jpg | fit 100x | format avif", (100, 67), "RGB", "AVIF", id="format-avif"),
    pytest.param("photo.jpg | fit 100x | format gif", (100, 67), "P", "GIF", id="format-gif"),
    pytest.param("logo.png | format jpeg", (400, 400), "RGB", "JPEG", id="jpeg-flattens-alpha"),
    pytest.param("logo.png | fit 100x | format webp lossless", (100, 100), "RGBA", "WEBP", id="webp-alpha"),
    pytest.param("logo.png | fit 100x | format gif", (100, 100), "P", "GIF", id="gif-alpha"),
    pytest.param("phone.jpg | fit 300x300", (200, 300), "RGB", "JPEG", id="exif-orientation"),
    pytest.param("palette.png", (200, 100), "RGBA", "PNG", id="palette-transparency"),
    pytest.param("grey16.png | fit 128x", (128, 64), "L", "PNG", id="sixteen-bit-grey"),
    pytest.param("cmyk.jpg | fit 150x", (150, 100), "RGB", "JPEG", id="cmyk-to-rgb"),
    pytest.param("animated.gif | fit 60x", (60, 40), "P", "GIF", id="gif-first-frame"),
    pytest.param("scan.tiff | page 2 | fit 150x", (150, 200), "L", "JPEG", id="tiff-page-two"),
    pytest.param("photo.bmp", (90, 60), "RGB", "JPEG", id="bmp-becomes-jpeg"),
]


@pytest.mark.parametrize(("text", "size", "mode", "image_format"), CASES)
def test_operation_output(made, text, size, mode, image_format):
    representation, image = made(text)
    assert image.format == image_format
    assert image.mode == mode
    assert (image.width, image.height) == (representation.width, representation.height)
    if size is not None:
        assert image.size == size


@pytest.mark.parametrize(
    ("text", "where", "colour"),
    [
        pytest.param("photo.jpg | fill 100x100 gravity=west", (0.5, 0.5), RED, id="gravity-west"),
        pytest.param("photo.jpg | fill 100x100 gravity=east", (0.5, 0.5), BLUE, id="gravity-east"),
        pytest.param("photo.jpg | fill 100x100 focus=0.95,0.5", (0.5, 0.5), BLUE, id="focus-right"),
        pytest.param("photo.jpg | flip horizontal", (0.1, 0.5), BLUE, id="flip-horizontal"),
        pytest.param("photo.jpg | crop 50%,0%,50%,100%", (0.5, 0.5), BLUE, id="crop-right-half"),
        pytest.param("photo.jpg | pad 600x600 color=#00ff00", (0.5, 0.02), GREEN, id="pad-colour"),
        pytest.param("photo.jpg | rotate 90", (0.5, 0.1), RED, id="rotate-clockwise"),
        pytest.param("phone.jpg", (0.95, 0.05), RED, id="exif-turns-clockwise"),
        pytest.param(
            "logo.png | background #00ff00 | format jpeg", (0.05, 0.05), GREEN, id="background-colour"
        ),
        pytest.param("logo.png | format jpeg", (0.05, 0.05), (255, 255, 255), id="jpeg-flattens-on-white"),
        pytest.param("animated.gif", (0.5, 0.5), RED, id="gif-frame-one"),
        pytest.param("cmyk.jpg", (0.5, 0.5), RED, id="cmyk-red"),
    ],
)
def test_operation_pixels(made, text, where, colour):
    _, image = made(text)
    assert close_to(colour_at(image, *where)[:3], colour, tolerance=60)


def test_transparent_padding_stays_transparent(made):
    _, image = made("logo.png | pad 600x300")
    assert colour_at(image, 0.02, 0.5)[3] == 0
    assert colour_at(image, 0.5, 0.5)[3] == 255


def test_blur_and_sharpen_change_detail(made):
    _, original = made("photo.jpg | format png")
    _, blurred = made("photo.jpg | blur 8 | format png")
    _, sharpened = made("photo.jpg | sharpen 3 | format png")
    edge = (0.5, 0.5, 0.52, 0.52)
    box = [round(edge[0] * 600) - 6, 100, round(edge[0] * 600) + 6, 300]
    spread = lambda image: ImageStat.Stat(image.crop(box).convert("L")).stddev[0]  # noqa: E731
    assert spread(blurred) < spread(original)
    assert sharpened.tobytes() != original.tobytes()


def test_quality_and_progressive(made):
    _, low = made("photo.jpg | format jpeg quality=5")
    _, high = made("photo.jpg | format jpeg quality=95 progressive")
    assert low.info.get("progressive") is None
    assert high.info.get("progressive") == 1
    assert len(low.fp_bytes) < len(high.fp_bytes)


def test_quality_shorthand_applies_to_the_source_format(made):
    _, low = made("photo.jpg | quality 5")
    _, default = made("photo.jpg")
    assert low.format == "JPEG" and len(low.fp_bytes) < len(default.fp_bytes)


def test_lossless_webp_keeps_every_pixel(made, site):
    _, image = made("photo.png | format webp lossless")
    original = Image.open(site.media / "photo.png").convert("RGB")
    assert image.convert("RGB").tobytes() == original.tobytes()


def test_colour_profile_kept_and_other_metadata_stripped(made):
    _, image = made("with-profile.jpg | fit 100x")
    assert image.info.get("icc_profile") == srgb_profile()
    assert dict(image.getexif()) == {}


def test_grayscale_drops_an_rgb_profile(made):
    _, image = made("with-profile.jpg | grayscale")
    assert image.mode == "L" and "icc_profile" not in image.info


def test_large_jpeg_is_decoded_at_reduced_size(site):
    from fileproc_wsgi import engines
    from fileproc_wsgi.instructions import parse

    write(site.media, "big.jpg", halves(4000, 3000), quality=80)
    instructions = parse("big.jpg | fit 200x150")
    with open(site.media / "big.jpg", "rb") as handle:
        decoded = engines.decode(handle, "big.jpg", instructions, site.config)
    assert 200 <= decoded.image.width <= 1000


@pytest.mark.parametrize(
    ("name", "content", "steps", "status", "message"),
    [
        pytest.param(
            "png-named.jpg",
            lambda path: halves(40, 20).save(path, "PNG"),
            "fit 20x",
            200,
            "",
            id="format-from-bytes-not-name",
        ),
        pytest.param(
            "vector.jpg",
            lambda path: path.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>'),
            "",
            422,
            "'vector.jpg' is an SVG file",
            id="svg-named-jpg",
        ),
        pytest.param(
            "script.png",
            lambda path: path.write_text("%!PS\n showpage"),
            "",
            422,
            "'script.png' is a PostScript file",
            id="postscript-named-png",
        ),
        pytest.param(
            "notes.jpg",
            lambda path: path.write_text("hello"),
            "",
            422,
            "not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="text-named-jpg",
        ),
        pytest.param(
            "truncated.jpg",
            lambda path: path.write_bytes(_truncated_jpeg()),
            "",
            422,
            "'truncated.jpg' is a JPEG image that could not be decoded",
            id="truncated-jpeg",
        ),
        pytest.param(
            "empty.png",
            lambda path: path.write_bytes(b""),
            "",
            422,
            "not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="empty-file",
        ),
        pytest.param(
            "two.tiff",
            lambda path: Image.new("L", (10, 10)).save(
                path, "TIFF", save_all=True, append_images=[Image.new("L", (10, 10))]
            ),
            "page 3",
            422,
            "page 3: 'two.tiff' has only 2 page(s)",
            id="page-beyond-last",
        ),
        pytest.param(
            "tiny.png",
            lambda path: None,
            "crop 100,100,10,10",
            422,
            "crop 100,100,10,10 lies outside the 40x20 image",
            id="crop-outside",
        ),
    ],
)
def test_bad_sources_fail_with_a_reason(site, name, content, steps, status, message):
    # Registered while the file was a good image, then replaced: the processing path
    # must refuse it by its bytes and record why.
    path = site.media / name
    # A one-page TIFF declares no page count, so "page 3" is refused only once it has two.
    halves(40, 20).save(path, "TIFF" if name.endswith(".tiff") else "PNG")
    url = site.registrar.register(f"{name} | {steps}" if steps else name).url
    content(path)
    response = site.get(url)
    if status == 200:
        response = site.get(response.location)
        assert response.status_int == 200 and response.content_type == "image/png"
        return
    assert response.status_int == status
    assert message in response.text
    assert "Traceback" not in response.text
    again = site.get(url)
    assert (again.status_int, again.text) == (response.status_int, response.text)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("vector.jpg", '<svg xmlns="http://www.w3.org/2000/svg"/>', "is an SVG file", id="svg"),
        pytest.param("script.pdf", "%!PS-Adobe-3.0\n", "is a PostScript file", id="postscript-named-pdf"),
        pytest.param(
            "list.mp4",
            "#EXTM3U\n#EXTINF:1,\nhttp://example.com/a.ts\n",
            "is an HLS playlist file",
            id="playlist-named-mp4",
        ),
    ],
)
def test_registration_refuses_disguised_files(site, name, content, message):
    (site.media / name).write_text(content)
    with pytest.raises(FileProcError, match=message):
        site.registrar.register(name)


def _truncated_jpeg() -> bytes:
    import io

    buffer = io.BytesIO()
    halves(400, 300).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()[:1500]


def test_source_pixel_limit_checked_before_decoding(make_site):
    site = make_site(max_source_pixels=10_000)
    write(site.media, "big.png", Image.new("RGB", (200, 100)))
    with pytest.raises(LimitError, match="200x100 = 20000 pixels, more than max_source_pixels=10000"):
        site.registrar.register("big.png | fit 10x")  # refused from the header, at render time
    # A source that grew past the limit after it was registered is refused by the request.
    write(site.media, "grows.png", Image.new("RGB", (50, 50)))
    url = site.registrar.register("grows.png | fit 10x").url
    write(site.media, "grows.png", Image.new("RGB", (200, 100)))
    response = site.get(url)
    assert response.status_int == 422
    assert "200x100 = 20000 pixels, more than max_source_pixels=10000" in response.text


def test_output_pixel_limit_is_checked_at_registration(make_site):
    site = make_site(max_output_pixels=5_000)
    write(site.media, "small.png", Image.new("RGB", (50, 50)))
    with pytest.raises(LimitError, match="1000x1000 pixels, more than max_output_pixels=5000"):
        site.registrar.register("small.png | upscale | fit 1000x1000")


def test_failures_are_errors_not_crashes(site):
    with pytest.raises(FileProcError):
        site.registrar.register("missing.jpg | fit 10x10")


# --------------------------------------------------------------------------- gravity=smart

_SUBJECT = (255, 40, 40), (250, 220, 30)  # red and yellow squares: detailed and colourful


def _scene(size: tuple[int, int], subject: tuple[int, int, int, int], mode: str = "RGB") -> Image.Image:
    """A flat grey picture with a checkerboard subject in ``subject`` (left, top, right, bottom)."""
    background = (128, 128, 128) if mode == "RGB" else (128, 128, 128, 255)
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = subject
    for x in range(left, right, 10):
        for y in range(top, bottom, 10):
            colour = _SUBJECT[(x // 10 + y // 10) % 2]
            draw.rectangle([x, y, x + 9, y + 9], fill=colour if mode == "RGB" else (*colour, 255))
    return image


def _subject_pixels(image: Image.Image) -> int:
    """How many visible pixels show the subject (red or yellow), whatever the encoder did."""
    red, _, blue, alpha = image.convert("RGBA").split()
    mask = ImageChops.multiply(red.point(lambda v: 255 * (v > 200)), blue.point(lambda v: 255 * (v < 100)))
    return ImageChops.multiply(mask, alpha.point(lambda v: 255 * (v > 200))).histogram()[255]


@pytest.mark.parametrize(
    ("size", "subject", "fill"),
    [
        pytest.param((1200, 400), (700, 100, 900, 300), "400x400", id="wide-subject-right-of-centre"),
        pytest.param((1200, 400), (20, 50, 220, 250), "400x400", id="wide-subject-at-the-left-edge"),
        pytest.param((400, 1200), (100, 900, 300, 1100), "400x400", id="tall-subject-low"),
        pytest.param((1200, 400), (700, 100, 900, 300), "200x200", id="scaled-down"),
    ],
)
def test_smart_gravity_keeps_the_subject_that_center_cuts(site, size, subject, fill):
    write(site.media, "scene.png", _scene(size, subject))
    _, smart = site.make(f"scene.png | fill {fill} gravity=smart | format png")
    _, center = site.make(f"scene.png | fill {fill} | format png")
    scale = smart.width / min(size)
    whole = (subject[2] - subject[0]) * (subject[3] - subject[1]) * scale * scale
    assert smart.size == center.size == tuple(int(side) for side in fill.split("x"))
    assert _subject_pixels(smart) >= 0.95 * whole, "the whole subject is in the smart crop"
    assert _subject_pixels(center) <= 0.6 * whole, "a centred crop cuts it"


def test_smart_gravity_on_a_flat_or_smooth_picture_is_centred(site):
    write(site.media, "flat.png", Image.new("RGB", (900, 300), (10, 120, 200)))
    write(site.media, "smooth.png", Image.linear_gradient("L").rotate(90).resize((900, 300)))
    for name in ("flat.png", "smooth.png"):
        _, smart = site.make(f"{name} | fill 300x300 gravity=smart | format png")
        _, center = site.make(f"{name} | fill 300x300 | format png")
        assert smart.tobytes() == center.tobytes()


@pytest.mark.parametrize("scale", [pytest.param(1, id="large"), pytest.param(5, id="small")])
def test_smart_gravity_ignores_transparent_detail(site, scale):
    # Detail under full transparency is nothing to look at; the visible subject wins.
    def box(*sides: int) -> tuple[int, ...]:
        return tuple(side // scale for side in sides)

    image = _scene(box(1200, 400), box(950, 100, 1150, 300), mode="RGBA")
    hidden = _scene(box(300, 300), box(0, 0, 300, 300), mode="RGBA")  # more detail than the subject
    hidden.putalpha(0)
    image.paste(hidden, box(50, 50))
    write(site.media, "layers.png", image)
    _, smart = site.make(f"layers.png | fill {400 // scale}x{400 // scale} gravity=smart | format png")
    assert _subject_pixels(smart) >= 0.9 * (200 // scale) ** 2


@pytest.mark.parametrize(
    "text", ["photo.jpg | fill 333x127 gravity=smart", "photo.jpg | fill 37x301 gravity=smart"]
)
def test_smart_gravity_lands_on_the_promised_size(made, text):
    representation, image = made(text)
    assert image.size == (representation.width, representation.height)


def test_smart_gravity_is_deterministic(site):
    scene = _scene((1600, 900), (1000, 200, 1300, 700))
    first = attention_box(scene, 900, 900)
    assert first == attention_box(scene.copy(), 900, 900)
    assert 1300 - 900 - 10 <= first[0] <= 1000 and first[1] == 0, "the subject, give or take a few pixels"
