"""The video engine: the frame at T, upright and in display proportions, from MP4, MOV,
Matroska/WebM and AVI files the tests write themselves with PyAV (and, where the point is
what the ``ffmpeg`` command line does, with it).

Every clip shows its own timeline: the top half is the colour of the current second and
the bottom half is the frame's number in eight black-or-white stripes, so a test reads
back exactly which frame it got.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from fractions import Fraction

import av  # a server without PyAV fails here, never skips
import pytest
from PIL import Image, ImageDraw

from fileproc_wsgi import engines
from fileproc_wsgi.config import Config
from fileproc_wsgi.engines import video
from fileproc_wsgi.errors import FileProcError, LimitError, ProcessingError
from fileproc_wsgi.instructions import parse
from support import colour_at

WIDTH, HEIGHT, RATE, SECONDS = 160, 90, 10, 5
FRAMES = RATE * SECONDS
SECOND_COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
BITS = 8


def test_pyav_is_installed():
    # The suite must not pass on a server that cannot read a video.
    assert engines.available()["video"] is True
    video.load()  # PyAV and its FFmpeg load, as in a worker


def picture(index: int, size=(WIDTH, HEIGHT)) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, SECOND_COLOURS[index // RATE % len(SECOND_COLOURS)])
    draw = ImageDraw.Draw(image)
    stripe = width / BITS
    for bit in range(BITS):
        on = index >> (BITS - 1 - bit) & 1
        draw.rectangle(
            [round(bit * stripe), height // 2, round((bit + 1) * stripe) - 1, height],
            fill=(255, 255, 255) if on else (0, 0, 0),
        )
    return image


def frame_number(image: Image.Image) -> int:
    """The frame number a :func:`picture` carries, read back from a decoded result."""
    number = 0
    for bit in range(BITS):
        red, green, blue = colour_at(image, (bit + 0.5) / BITS, 0.8)[:3]
        number = number << 1 | (red + green + blue > 3 * 128)
    return number


def second_colour(image: Image.Image):
    return colour_at(image, 0.5, 0.2)[:3]


def close(actual, expected, tolerance: int = 48) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def write_clip(
    path,
    container: str = "mp4",
    codec: str = "libx264",
    *,
    frames: int = FRAMES,
    size=(WIDTH, HEIGHT),
    rotation: int | None = None,
    sar: Fraction | None = None,
    options: dict | None = None,
    faststart: bool = False,
) -> None:
    muxer = {"movflags": "+faststart"} if faststart else None
    with av.open(str(path), "w", format=container, options=muxer) as output:
        stream = output.add_stream(codec, rate=RATE)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # A keyframe every 7 frames (never on a second) and B-frames: seeking must
            # land before the target and decode forward through reordered frames.
            stream.options = {"crf": "12", "x264-params": "keyint=7:min-keyint=7:scenecut=0:bframes=3"}
        elif codec == "mpeg4":
            stream.options = {"qscale": "2", "g": "7"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": "7"}
        stream.options.update(options or {})
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            frame = av.VideoFrame.from_image(picture(index, size))
            frame.pts = index
            frame.time_base = Fraction(1, RATE)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def write_audio_only(path) -> None:
    with av.open(str(path), "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=8000, layout="mono")
        for index in range(8):
            frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
            frame.sample_rate, frame.pts = 8000, index * 1024
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def ffmpeg(*arguments: str) -> None:
    done = subprocess.run(["ffmpeg", "-v", "error", "-y", *arguments], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Every clip the tests use, written once per module."""
    directory = tmp_path_factory.mktemp("clips")
    write_clip(directory / "clip.mp4")
    write_clip(directory / "clip.mov", "mov")
    write_clip(directory / "clip.mkv", "matroska")
    write_clip(directory / "clip.webm", "webm", "libvpx-vp9")
    write_clip(directory / "clip.avi", "avi", "mpeg4")
    write_clip(directory / "fast.mp4", faststart=True)
    # MPEG-4 part 2 with B-frames: the demuxer finds a keyframe by decoding time, which can
    # be shown after the time asked for; the engine must step back and decode on. (Not in
    # AVI, which has no presentation times: FFmpeg guesses them a frame late there.)
    write_clip(directory / "bframes.mp4", "mp4", "mpeg4", options={"bf": "2"})
    # Matroska as a live recorder writes it: no cues to seek by, no duration up front.
    with open(directory / "live.mkv", "wb") as live:
        subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(directory / "clip.mkv"), "-c", "copy", "-f", "matroska", "-"],
            stdout=live,
            check=True,
            timeout=60,
        )
    for degrees in (90, 180, 270):
        write_clip(directory / f"phone{degrees}.mp4", frames=5, rotation=degrees)
    write_clip(directory / "phone90.mov", "mov", frames=5, rotation=90)
    write_clip(directory / "phone90.mkv", "matroska", frames=5, rotation=90)
    # The classic way, still what many tools write: a "rotate" tag turned into the track matrix.
    ffmpeg(
        "-i",
        str(directory / "clip.mp4"),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        str(directory / "tagged.mp4"),
    )
    write_clip(directory / "wide.mp4", frames=5, sar=Fraction(2, 1))
    write_clip(directory / "wide.mkv", "matroska", frames=5, sar=Fraction(4, 3))
    write_clip(directory / "wide.avi", "avi", "mpeg4", frames=5, sar=Fraction(4, 3))
    write_clip(directory / "narrow.mp4", frames=5, sar=Fraction(3, 4))
    write_clip(directory / "sparse.mp4", options={"x264-params": "keyint=300:min-keyint=300:scenecut=0"})
    write_audio_only(directory / "audio.mp4")
    return directory


@pytest.fixture
def media(site, clips):
    """The site's source directory with every clip in it."""
    for path in clips.iterdir():
        shutil.copy(path, site.media / path.name)
    return site.media


# --------------------------------------------------------------------------- which frame


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param("frame 0", 0, id="start"),
        pytest.param("frame 2", 20, id="seconds"),
        pytest.param("frame 2s", 20, id="seconds-with-unit"),
        pytest.param("frame 2.05", 20, id="between-frames-is-the-frame-on-screen"),
        pytest.param("frame 1.99", 19, id="just-before-a-second"),
        pytest.param("frame 2.09", 20, id="just-before-a-keyframe"),
        pytest.param("frame 2.1", 21, id="on-a-keyframe"),
        pytest.param("frame 3.3", 33, id="after-b-frames"),
        pytest.param("frame 00:00:02.500", 25, id="clock"),
        pytest.param("frame 00:03", 30, id="minutes-seconds"),
        pytest.param("frame 50%", 25, id="percent"),
        pytest.param("frame 0%", 0, id="zero-percent"),
        pytest.param("frame 100%", FRAMES - 1, id="hundred-percent-is-the-last"),
        pytest.param("frame 4.95", FRAMES - 1, id="last-frame"),
        pytest.param("frame 9", FRAMES - 1, id="past-the-end-is-the-last"),
        pytest.param("frame 86400", FRAMES - 1, id="far-past-the-end"),
        pytest.param("", FRAMES // 10, id="default-is-ten-percent"),
        pytest.param("frame 1 | frame 3", 30, id="last-frame-step-wins"),
    ],
)
def test_the_frame_at_t(site, media, steps, expected):
    representation, image = site.make(
        f"clip.mp4 | {steps} | format png" if steps else "clip.mp4 | format png"
    )
    assert image.size == (WIDTH, HEIGHT) == (representation.width, representation.height)
    assert frame_number(image) == expected
    assert close(second_colour(image), SECOND_COLOURS[expected // RATE])


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("clip.mp4", id="mp4"),
        pytest.param("clip.mov", id="mov"),
        pytest.param("clip.mkv", id="matroska"),
        pytest.param("clip.webm", id="webm"),
        pytest.param("clip.avi", id="avi"),
        pytest.param("fast.mp4", id="mp4-faststart"),
        pytest.param("live.mkv", id="matroska-without-cues"),
        pytest.param("bframes.mp4", id="mp4-mpeg4-b-frames"),
    ],
)
@pytest.mark.parametrize(
    ("time", "expected"),
    [
        pytest.param("2.05", 20, id="2.05s"),
        pytest.param("1.35", 13, id="1.35s"),
        pytest.param("3.3", 33, id="3.3s"),
        pytest.param("0.0", 0, id="0s"),
        pytest.param("60", FRAMES - 1, id="past-the-end"),
    ],
)
def test_every_container(site, media, name, time, expected):
    representation, image = site.make(f"{name} | frame {time} | fit 80x | format png")
    assert (representation.width, representation.height) == image.size == (80, 45)
    assert frame_number(image) == expected
    assert close(second_colour(image), SECOND_COLOURS[expected // RATE])


def test_through_the_pipeline_as_jpeg(site, media):
    representation, image = site.make("clip.mp4 | frame 2 | fit 320x")
    assert representation.content_type == "image/jpeg" and image.format == "JPEG"
    # fit never enlarges: the 160x90 frame stays as it is.
    assert image.size == (representation.width, representation.height) == (WIDTH, HEIGHT)
    assert frame_number(image) == 20
    assert close(second_colour(image), SECOND_COLOURS[2])


def test_percent_on_a_file_without_duration_up_front(site, media):
    # A live recording's duration is not in its header; FFmpeg still estimates one.
    representation, image = site.make("live.mkv | frame 50% | format png")
    assert abs(frame_number(image) - 25) <= 1


def test_a_sparse_keyframe_file_decodes_forward(site, media):
    _, image = site.make("sparse.mp4 | frame 4.2 | format png")
    assert frame_number(image) == 42


@pytest.mark.in_process
def test_decoding_is_bounded(site, media, monkeypatch):
    monkeypatch.setattr(video, "MAX_DECODED_FRAMES", 10)
    # The only keyframe is at 0 s: reaching 4.2 s needs 43 frames.
    response = site.request("sparse.mp4 | frame 4.2 | format png")
    assert response.status_int == 422
    assert "more than 10 decoded frames" in response.text
    _, image = site.make("clip.mp4 | frame 4.2 | format png")  # a keyframe every 7 frames
    assert frame_number(image) == 42


# --------------------------------------------------------------------------- upright and in proportion


@pytest.mark.parametrize(
    ("name", "size"),
    [
        pytest.param("phone90.mp4", (HEIGHT, WIDTH), id="mp4-90"),
        pytest.param("phone180.mp4", (WIDTH, HEIGHT), id="mp4-180"),
        pytest.param("phone270.mp4", (HEIGHT, WIDTH), id="mp4-270"),
        pytest.param("phone90.mov", (HEIGHT, WIDTH), id="mov-90"),
        pytest.param("phone90.mkv", (HEIGHT, WIDTH), id="matroska-90"),
        pytest.param("tagged.mp4", (HEIGHT, WIDTH), id="rotate-tag"),
    ],
)
def test_rotated_video_is_upright_as_ffmpeg_shows_it(site, media, name, size):
    representation, image = site.make(f"{name} | frame 0 | format png")
    assert (representation.width, representation.height) == image.size == size
    # The ffmpeg command line turns frames by the same metadata: the reference picture.
    ffmpeg("-i", str(media / name), "-frames:v", "1", str(media / "reference.png"))
    with Image.open(media / "reference.png") as reference:
        reference = reference.convert("RGB")
        assert reference.size == size
        for x, y in [(0.5, 0.05), (0.5, 0.95), (0.05, 0.5), (0.95, 0.5), (0.3, 0.3), (0.7, 0.7)]:
            assert close(colour_at(image, x, y), colour_at(reference, x, y)), (x, y)


def test_a_turned_phone_video_fits_as_portrait(site, media):
    representation, image = site.make("phone270.mp4 | frame 0 | fit 45x")
    assert (representation.width, representation.height) == image.size == (45, 80)
    # Turned clockwise: the frame's top half (the colour) is now on the right.
    assert close(colour_at(image, 0.8, 0.5), SECOND_COLOURS[0])


@pytest.mark.parametrize(
    ("name", "steps", "size"),
    [
        pytest.param("wide.mp4", "format png", (320, 90), id="sar-2-1"),
        pytest.param("wide.mkv", "format png", (213, 90), id="sar-4-3-matroska-codec-only"),
        pytest.param("wide.avi", "format png", (213, 90), id="sar-4-3-avi"),
        pytest.param("narrow.mp4", "format png", (120, 90), id="sar-3-4"),
        pytest.param("wide.mp4", "fit 100x", (100, 28), id="fit-width"),
        pytest.param("wide.mp4", "fit x45", (160, 45), id="fit-height"),
        pytest.param("wide.mp4", "fill 50x50", (50, 50), id="fill"),
    ],
)
def test_non_square_pixels_follow_the_display_aspect(site, media, name, steps, size):
    representation, image = site.make(f"{name} | frame 0 | {steps}")
    assert (representation.width, representation.height) == image.size == size
    assert close(second_colour(image), SECOND_COLOURS[0])


def test_a_large_reduction_decodes_small_and_keeps_the_frame(tmp_path):
    write_clip(tmp_path / "big.mp4", frames=3, size=(1280, 720))
    instructions = parse("big.mp4 | frame 0.1 | fit 80x")
    with open(tmp_path / "big.mp4", "rb") as handle:
        image, profile, size = video.decode(handle, "MP4", "big.mp4", instructions, Config())
    assert profile is None and image.mode == "RGB" and size == (1280, 720)
    # Twice what fit keeps, so the final Lanczos pass has detail to work with.
    assert image.size == (160, 90)
    assert frame_number(image) == 1


def test_probe_reads_headers_only(clips):
    # The predicted size must not cost a decode: it is taken while a template renders.
    for name, found, size in [
        ("clip.mp4", "MP4", (WIDTH, HEIGHT)),
        ("clip.mkv", "MKV", (WIDTH, HEIGHT)),
        ("clip.avi", "AVI", (WIDTH, HEIGHT)),
        ("phone90.mov", "MOV", (HEIGHT, WIDTH)),
        ("phone90.mkv", "MKV", (HEIGHT, WIDTH)),
        ("wide.mkv", "MKV", (213, HEIGHT)),
    ]:
        with open(clips / name, "rb") as handle:
            assert video.probe_native(handle, found, name) == (*size, False), name


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param(
            "list.mp4",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://127.0.0.1:9/a.ts\n",
            "'list.mp4' is an HLS playlist file, which this server does not decode",
            id="hls-playlist-named-mp4",
        ),
        pytest.param(
            "list.mp4",
            "ffconcat version 1.0\nfile /etc/passwd\nfile http://127.0.0.1:9/a.mp4\n",
            "'list.mp4' is not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="ffconcat-named-mp4",
        ),
        pytest.param(
            "concat.mkv",
            "concat:/etc/passwd|clip.mp4",
            "'concat.mkv' is not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="concat-url-named-mkv",
        ),
        pytest.param(
            "notes.mp4",
            "hello\n",
            "'notes.mp4' is not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="text",
        ),
    ],
)
def test_disguised_files_are_refused(site, name, content, message):
    (site.media / name).write_text(content)
    with pytest.raises(FileProcError, match=re.escape(message)):
        site.registrar.register(name)
    # Registered while a real clip, then replaced: the processing path refuses it too.
    write_clip(site.media / name, frames=2)
    url = site.registrar.register(f"{name} | frame 0").url
    (site.media / name).write_text(content)
    response = site.get(url)
    assert response.status_int == 422
    assert message in response.text


def test_the_pinned_demuxer_never_follows_a_playlist(tmp_path):
    # Defence in depth below the sniffing: a playlist handed to the engine as an MP4 is
    # read by the MP4 demuxer only, so the server it names is never contacted.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        path = tmp_path / "list.mp4"
        path.write_text(f"#EXTM3U\n#EXTINF:2,\nhttp://127.0.0.1:{port}/a.ts\n")
        for found in ("MP4", "MKV", "AVI"):
            with open(path, "rb") as handle, pytest.raises(ProcessingError, match="is not a readable video"):
                video.probe_native(handle, found, "list.mp4")
        with pytest.raises(TimeoutError):
            server.accept()


def _truncated(clips, site) -> None:
    data = (clips / "clip.mp4").read_bytes()
    (site.media / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) comes last


def test_page_on_a_video_is_refused_at_registration(site, clips):
    shutil.copy(clips / "clip.mp4", site.media / "cut.mp4")
    with pytest.raises(
        ProcessingError, match="page applies to PDFs and other documents; 'cut.mp4' is an MP4 video"
    ):
        site.registrar.register("cut.mp4 | page 2")


@pytest.mark.parametrize(
    ("make", "steps", "message"),
    [
        pytest.param(
            _truncated,
            "frame 1",
            "'cut.mp4' is not a readable video (",
            id="truncated",
        ),
        pytest.param(
            lambda clips, site: shutil.copy(clips / "audio.mp4", site.media / "cut.mp4"),
            "frame 1",
            "'cut.mp4' has no video stream",
            id="audio-only",
        ),
    ],
)
def test_bad_videos_fail_with_a_reason(site, clips, make, steps, message):
    shutil.copy(clips / "clip.mp4", site.media / "cut.mp4")
    url = site.registrar.register(f"cut.mp4 | {steps}").url
    make(clips, site)
    response = site.get(url)
    assert response.status_int == 422
    assert message in response.text
    assert str(site.root) not in response.text and "Traceback" not in response.text
    if steps.startswith("frame"):  # refused at registration too, by the header
        with pytest.raises(ProcessingError, match=message.replace("(", r"\(")):
            site.registrar.register("cut.mp4 | fit 10x")


def test_a_file_cut_after_its_index_gives_what_remains(site, clips):
    data = (clips / "fast.mp4").read_bytes()
    (site.media / "cut.mp4").write_bytes(data[: len(data) * 3 // 5])
    _, image = site.make("cut.mp4 | frame 0.5 | format png")
    assert frame_number(image) == 5
    _, image = site.make("cut.mp4 | frame 4.9 | format png")
    assert 5 < frame_number(image) < FRAMES - 1  # the last frame that survives


def test_source_pixel_limit(make_site, clips):
    site = make_site(max_source_pixels=10_000)
    shutil.copy(clips / "clip.mp4", site.media / "clip.mp4")
    with pytest.raises(LimitError, match="160x90 = 14400 pixels per frame, more than max_source_pixels="):
        site.registrar.register("clip.mp4 | frame 1 | fit 10x")


def test_output_pixel_limit_is_checked_at_registration(make_site, clips):
    site = make_site(max_output_pixels=10_000)
    shutil.copy(clips / "wide.mp4", site.media / "wide.mp4")
    with pytest.raises(LimitError, match="320x90 pixels, more than max_output_pixels=10000"):
        site.registrar.register("wide.mp4 | frame 0 | format png")
