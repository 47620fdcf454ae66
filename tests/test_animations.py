"""Animated GIF, WebP and APNG sources stay animated in a GIF or WebP result.

Every case registers a text, asks for its URL through the middleware (jobs run in the
real worker pool unless a test says otherwise), decodes the bytes and checks what a
browser would show: how many frames, each frame's time on screen, how many times the
whole plays, each frame at the promised size, and each frame's pixels those of the
source's frame at that index, scaled.
"""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageStat

from fileproc_wsgi.errors import LimitError
from fileproc_wsgi.instructions import parse
from support import close_to, colour_at, first_request, write

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 20)]
DURATIONS = [100, 250, 400, 70]


def _solid_frames(size=(160, 80), colours=COLOURS) -> list[Image.Image]:
    return [Image.new("RGB", size, colour) for colour in colours]


def _save(directory, name: str, frames: list[Image.Image], **params) -> None:
    first, *rest = frames
    write(directory, name, first, save_all=True, append_images=rest, **params)


def _shown(image: Image.Image) -> list[tuple[int, Image.Image]]:
    """(milliseconds, RGBA picture) of every frame of a decoded result."""
    shown = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        image.load()
        shown.append((round(image.info.get("duration", 0)), image.convert("RGBA")))
    return shown


def _result(site, text: str):
    representation, image = site.make(text)
    return representation, image, _shown(image)


SOURCES = [
    pytest.param("anim.gif", {"loop": 0}, id="gif"),
    pytest.param("anim.webp", {"loop": 0, "lossless": True}, id="webp"),
    pytest.param("anim.png", {"loop": 0}, id="apng"),
]


@pytest.mark.parametrize(("name", "params"), SOURCES)
@pytest.mark.parametrize("output", ["gif", "webp"])
def test_an_animation_stays_animated(site, name, params, output):
    _save(site.media, name, _solid_frames(), duration=DURATIONS, **params)
    text = f"{name} | fit 60x | format {output}"
    representation, image, shown = _result(site, text)

    assert image.format == output.upper()
    assert (representation.width, representation.height) == (60, 30)
    assert [duration for duration, _ in shown] == DURATIONS
    assert image.info.get("loop") == 0, "loops for ever, as the source"
    for index, (_, frame) in enumerate(shown):
        assert frame.size == (60, 30), f"frame {index + 1}"
        for x, y in ((0.1, 0.1), (0.5, 0.5), (0.9, 0.9)):
            assert close_to(colour_at(frame, x, y)[:3], COLOURS[index], 12), f"frame {index + 1} at {x},{y}"


def test_a_gif_stays_a_gif_by_default_and_the_default_of_an_apng_is_a_still(site):
    _save(site.media, "anim.gif", _solid_frames(), duration=DURATIONS, loop=0)
    _save(site.media, "anim.png", _solid_frames(), duration=DURATIONS, loop=0)

    _, gif, shown = _result(site, "anim.gif | fit 40x")
    assert (gif.format, len(shown)) == ("GIF", 4)

    _, png, shown = _result(site, "anim.png | fit 40x")
    assert png.format == "PNG" and len(shown) == 1, "PNG results take the first frame, as before"
    assert close_to(colour_at(png, 0.5, 0.5)[:3], COLOURS[0], 2)


@pytest.mark.parametrize(
    ("source", "loop", "gif_loop", "webp_loop"),
    [
        # A GIF's loop count is the repeats after the first play; WebP states the plays.
        pytest.param("gif", None, None, 1, id="gif-plays-once"),
        pytest.param("gif", 1, 1, 2, id="gif-plays-twice"),
        pytest.param("gif", 0, 0, 0, id="gif-for-ever"),
        pytest.param("webp", 1, None, 1, id="webp-plays-once"),
        pytest.param("webp", 3, 2, 3, id="webp-plays-three-times"),
        pytest.param("png", 1, None, 1, id="apng-plays-once"),
    ],
)
def test_the_number_of_plays_is_kept(site, source, loop, gif_loop, webp_loop):
    params = {} if loop is None else {"loop": loop}
    _save(site.media, f"anim.{source}", _solid_frames(colours=COLOURS[:2]), duration=100, **params)

    _, gif, _ = _result(site, f"anim.{source} | fit 40x | format gif")
    _, webp, _ = _result(site, f"anim.{source} | fit 40x | format webp")

    assert gif.info.get("loop") == gif_loop
    assert webp.info.get("loop") == webp_loop
    assert (gif.n_frames, webp.n_frames) == (2, 2)


def _sprite_frames() -> list[Image.Image]:
    """A red square on the left, then a blue one on the right, on transparency."""
    frames = []
    for box, colour in (((0, 0, 40, 40), COLOURS[0]), ((80, 0, 120, 40), COLOURS[2])):
        frame = Image.new("RGBA", (120, 40), (0, 0, 0, 0))
        ImageDraw.Draw(frame).rectangle(box, fill=colour + (255,))
        frames.append(frame)
    return frames


@pytest.mark.parametrize("output", ["gif", "webp"])
def test_a_frame_cleared_to_transparency_stays_clear(site, output):
    # Disposal 2: the red square is cleared before the blue one is drawn, so a browser
    # shows the second frame with only the blue square.
    _save(site.media, "sprite.gif", _sprite_frames(), duration=100, loop=0, disposal=2)
    _, image, shown = _result(site, f"sprite.gif | fit 60x | format {output}")

    assert len(shown) == 2
    (_, first), (_, second) = shown
    assert colour_at(first, 0.1, 0.5)[3] == 255 and colour_at(first, 0.9, 0.5)[3] == 0
    assert colour_at(second, 0.1, 0.5)[3] == 0, "the red square was disposed of"
    assert close_to(colour_at(second, 0.9, 0.5), COLOURS[2] + (255,), 12)


@pytest.mark.parametrize("output", ["gif", "webp"])
def test_a_transparent_frame_after_an_opaque_one_shows_what_is_behind(site, output):
    # One transparent pixel gives the first frame a transparent index: a frame without
    # one is cleared to the background colour by Pillow, to transparency by browsers.
    opaque = Image.new("RGBA", (120, 40), COLOURS[1] + (255,))
    opaque.putpixel((0, 0), (0, 0, 0, 0))
    _save(site.media, "flash.gif", [opaque, *_sprite_frames()], duration=100, loop=0, disposal=2)
    _, _, shown = _result(site, f"flash.gif | fit 60x | format {output}")

    assert len(shown) == 3
    assert colour_at(shown[0][1], 0.9, 0.5)[3] == 255
    assert colour_at(shown[1][1], 0.9, 0.5)[3] == 0, "nothing of the opaque frame is left"
    assert close_to(colour_at(shown[1][1], 0.1, 0.5), COLOURS[0] + (255,), 12)


@pytest.mark.parametrize("output", ["gif", "webp"])
def test_identical_frames_are_shown_for_as_long(site, output):
    frames = _solid_frames(colours=[COLOURS[0], COLOURS[0], COLOURS[1]])
    _save(site.media, "repeat.webp", frames, duration=[100, 200, 300], loop=0, lossless=True)
    _, _, shown = _result(site, f"repeat.webp | fit 60x | format {output}")

    # A GIF writer may merge the first two into one frame of 300 ms: the same to a viewer.
    timeline = [(duration, colour_at(frame, 0.5, 0.5)[:3]) for duration, frame in shown]
    assert sum(duration for duration, _ in timeline) == 600
    assert close_to(timeline[-1][1], COLOURS[1], 12) and timeline[-1][0] == 300
    assert all(close_to(colour, COLOURS[0], 12) for _, colour in timeline[:-1])


@pytest.mark.parametrize("output", ["gif", "webp"])
def test_a_frame_that_covers_part_of_the_last_is_shown_over_it(site, output):
    # Pillow stores only the changed part of the second frame (disposal 1): the result's
    # frames are whole, as a browser composites them.
    first = Image.new("RGB", (120, 60), COLOURS[0])
    second = first.copy()
    ImageDraw.Draw(second).rectangle((60, 0, 119, 59), fill=COLOURS[2])
    _save(site.media, "partial.gif", [first, second], duration=100, loop=0, disposal=1)
    with Image.open(site.media / "partial.gif") as stored:
        stored.seek(1)
        assert stored.dispose_extent[0] == 60, "the source's second frame covers the right half only"

    _, _, shown = _result(site, f"partial.gif | fit 60x | format {output}")

    second_shown = shown[1][1]
    assert close_to(colour_at(second_shown, 0.2, 0.5)[:3], COLOURS[0], 12), "the left half is kept"
    assert close_to(colour_at(second_shown, 0.8, 0.5)[:3], COLOURS[2], 12)


def test_page_picks_one_frame_as_a_still(site):
    _save(site.media, "anim.gif", _solid_frames(), duration=DURATIONS, loop=0)
    _save(site.media, "anim.webp", _solid_frames(), duration=DURATIONS, loop=0, lossless=True)

    for name in ("anim.gif", "anim.webp"):
        representation, image, shown = _result(site, f"{name} | page 2 | fit 60x | format webp")
        assert len(shown) == 1, name
        assert (representation.width, representation.height) == image.size == (60, 30)
        assert close_to(colour_at(image, 0.5, 0.5)[:3], COLOURS[1], 12), name


@pytest.mark.parametrize("output", ["jpeg", "png", "avif"])
def test_a_format_that_does_not_animate_takes_the_first_frame(site, output):
    _save(site.media, "anim.gif", _solid_frames(), duration=DURATIONS, loop=0)
    _, image, shown = _result(site, f"anim.gif | fit 60x | format {output}")

    assert image.format == output.upper() and len(shown) == 1
    assert close_to(colour_at(image, 0.5, 0.5)[:3], COLOURS[0], 12)


def _busy(frame: Image.Image, left: int, right: int) -> None:
    draw = ImageDraw.Draw(frame)
    for x in range(left, right, 4):
        for y in range(0, frame.height, 4):
            if (x // 4 + y // 4) % 2:
                draw.rectangle((x, y, x + 3, y + 3), fill=(255, 255, 255))


def test_a_smart_crop_is_chosen_once_for_every_frame(site):
    # The detail is on the right in the first frame and on the left in the second: a crop
    # chosen per frame would jump from one side to the other.
    first, second = Image.new("RGB", (300, 100), COLOURS[0]), Image.new("RGB", (300, 100), COLOURS[2])
    _busy(first, 200, 300)
    _busy(second, 0, 100)
    _save(site.media, "busy.gif", [first, second], duration=100, loop=0)

    _, _, shown = _result(site, "busy.gif | fill 50x50 gravity=smart | format webp")

    (_, one), (_, two) = shown
    assert one.size == two.size == (50, 50)
    assert ImageStat.Stat(one.convert("L")).stddev[0] > 40, "the first frame shows its detail"
    assert max(ImageStat.Stat(two.convert("RGB")).stddev) < 8, "the second is cut where the first was"
    assert close_to(colour_at(two, 0.5, 0.5)[:3], COLOURS[2], 12)


def test_every_step_applies_to_every_frame(site):
    frames = []
    for colour in COLOURS[:3]:
        frame = Image.new("RGB", (200, 100), colour)
        ImageDraw.Draw(frame).rectangle((0, 0, 49, 99), fill=(0, 0, 0))  # a black left quarter
        frames.append(frame)
    _save(site.media, "steps.gif", frames, duration=100, loop=0)

    representation, _, shown = _result(site, "steps.gif | crop 0,0,100,100 | flip horizontal | fit 40x")

    assert (representation.width, representation.height) == (40, 40)
    for index, (_, frame) in enumerate(shown):
        assert frame.size == (40, 40)
        assert close_to(colour_at(frame, 0.1, 0.5)[:3], COLOURS[index], 12), "the crop's right half, flipped"
        assert close_to(colour_at(frame, 0.9, 0.5)[:3], (0, 0, 0), 12)


@pytest.mark.in_process
def test_an_animation_in_the_web_process_too(make_site):
    site = make_site()
    assert not site.config.isolate_jobs
    _save(site.media, "anim.gif", _solid_frames(), duration=DURATIONS, loop=0)
    _, image, shown = _result(site, "anim.gif | fit 60x | format webp")
    assert [duration for duration, _ in shown] == DURATIONS and image.info["loop"] == 0


# --------------------------------------------------------------------------- checksums


def test_only_results_that_animate_get_new_urls(site):
    _save(site.media, "anim.gif", _solid_frames(), duration=100, loop=0)
    write(site.media, "still.gif", Image.new("RGB", (50, 50), COLOURS[0]))
    write(site.media, "photo.jpg", Image.new("RGB", (50, 50), COLOURS[0]))

    def unsalted(text: str) -> str:
        instructions = parse(text)
        return instructions.checksum(site.registrar.sources.resolve(instructions.source).version())

    animated = ["anim.gif | fit 20x", "anim.gif | fit 20x | format webp"]
    stills = [
        "anim.gif | fit 20x | format jpeg",
        "anim.gif | page 1 | fit 20x",
        "anim.gif | page 2 | fit 20x | format webp",
        "still.gif | fit 20x",
        "photo.jpg | fit 20x | format webp",
    ]
    for text in animated:
        assert site.registrar.register(text).checksum != unsalted(text), text
    for text in stills:
        assert site.registrar.register(text).checksum == unsalted(text), text


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("name", "params"),
    [pytest.param("anim.webp", {"lossless": True}, id="webp"), pytest.param("anim.png", {}, id="apng")],
)
def test_more_frames_than_allowed_are_refused_at_registration_when_the_header_says(make_site, name, params):
    site = make_site(max_source_frames=3)
    _save(site.media, name, _solid_frames(), duration=100, **params)

    with pytest.raises(LimitError) as refused:
        site.registrar.register(f"{name} | fit 60x | format webp")
    assert str(refused.value) == (
        f"source {name!r} has 4 frames, more than max_source_frames=3 "
        "(a result that animates decodes every frame)"
    )
    assert site.store.count_by_state() == {}

    # Its first frame, or one page, is no animation: still made.
    _, image, shown = _result(site, f"{name} | fit 60x | format jpeg")
    assert len(shown) == 1 and close_to(colour_at(image, 0.5, 0.5)[:3], COLOURS[0], 12)


@pytest.mark.parametrize(
    ("budget", "text", "message"),
    [
        pytest.param(
            40_000,
            "anim.webp | fit 60x",
            "source 'anim.webp' has 4 frames of 160x80 = 51200 pixels, more than max_animation_pixels=40000",
            id="source",
        ),
        pytest.param(
            60_000,
            "anim.webp | upscale | resize 200x100",
            "the animated result of 'anim.webp' has 4 frames of 200x100 = 80000 pixels, "
            "more than max_animation_pixels=60000",
            id="result",
        ),
    ],
)
def test_more_animation_pixels_than_allowed_are_refused_at_registration(make_site, budget, text, message):
    site = make_site(max_animation_pixels=budget)
    _save(site.media, "anim.webp", _solid_frames(), duration=100, lossless=True)  # 4 x 160x80

    with pytest.raises(LimitError) as refused:
        site.registrar.register(text)
    assert str(refused.value) == message
    assert site.registrar.register(text.replace("anim.webp", "anim.webp | page 1")).width is not None


def test_a_gif_is_counted_while_it_is_made(make_site):
    # A GIF's header does not say how many frames it has: registration reads only as far
    # as a second frame, and the job stops once it has walked one frame too many.
    site = make_site(max_source_frames=3)
    _save(site.media, "anim.gif", _solid_frames(), duration=100, loop=0)

    outcome = first_request(site, "anim.gif | fit 60x", fmt="GIF")

    assert (outcome.kind, outcome.status) == ("refused at request", 422), outcome
    assert outcome.reason.strip() == (
        "source 'anim.gif' has 4 frames or more, more than max_source_frames=3 "
        "(a result that animates decodes every frame)"
    )
    assert not outcome.problems


def test_a_gif_cut_short_keeps_the_frames_before_the_cut(site):
    _save(site.media, "anim.gif", _solid_frames(), duration=DURATIONS, loop=0)
    data = (site.media / "anim.gif").read_bytes()
    (site.media / "cut.gif").write_bytes(data[: len(data) - 12])  # into the last frame's data

    _, image, shown = _result(site, "cut.gif | fit 60x | format webp")

    assert 2 <= len(shown) <= 4
    for index, (_, frame) in enumerate(shown[:-1]):
        assert close_to(colour_at(frame, 0.5, 0.5)[:3], COLOURS[index], 12)


# --------------------------------------------------------------------------- real files


def _animated_corpus() -> list:
    from test_corpus import pillow_images

    found = []
    for path in sorted(pillow_images().rglob("*")):
        if path.suffix.lower() not in (".gif", ".webp", ".png", ".apng") or not path.is_file():
            continue
        try:
            with Image.open(path) as image:
                if getattr(image, "n_frames", 1) > 1:
                    found.append(path)
        except Exception:  # noqa: BLE001, S112 - the corpus holds broken files on purpose
            continue
    return found


def test_the_animations_of_pillows_own_test_images(make_site):
    """Every animated GIF, WebP and PNG of Pillow's test images either becomes an
    animation of the promised size or is refused with one line; never a traceback."""
    import shutil

    from fileproc_wsgi import formats

    site = make_site()
    files = _animated_corpus()
    assert len(files) > 40, f"only {len(files)} animated files found"
    made = refused = 0
    problems = []
    for index, path in enumerate(files):
        name = f"c{index:03d}{path.suffix.lower()}"
        shutil.copyfile(path, site.media / name)
        found = formats.sniff((site.media / name).read_bytes()[: formats.HEAD_BYTES])
        for output in ("gif", "webp"):
            outcome = first_request(
                site, f"{name} | fit 64x64 | format {output}", fmt=formats.display_name(found or "")
            )
            problems += [f"{path.name} -> {output}: {kind}: {detail}" for kind, detail in outcome.problems]
            if outcome.kind == "made":
                made += 1
            else:
                refused += 1
                assert outcome.reason.strip().count("\n") == 0
    assert not problems, "\n".join(problems)
    assert made > refused, (made, refused)


def test_the_animation_budget_is_a_setting_like_the_other_limits():
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.errors import ConfigError

    assert Config().max_animation_pixels == 100_000_000
    assert Config.from_env({"FILEPROC_MAX_ANIMATION_PIXELS": "5000"}).max_animation_pixels == 5000
    assert Config.from_mapping({"MAX_ANIMATION_PIXELS": 7}).max_animation_pixels == 7
    with pytest.raises(ConfigError, match="max_animation_pixels: expected a positive whole number, got 0"):
        Config(max_animation_pixels=0)
