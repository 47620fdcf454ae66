"""Django storages as source roots (``django:<alias>``, ``django:app.Model.field``), for real:
FileSystemStorage in a temporary MEDIA_ROOT, InMemoryStorage, and django-storages'
S3Storage on a moto S3 server of its own. A photo saved through a model's ImageField
renders through ``source=``, is made by the middleware in a worker process, and a
replaced file gets a new URL.
"""

from __future__ import annotations

import io
import logging
import re
import uuid

import pytest

from django_support import PAGE, decode, fetch, images, jpeg, photo, render, settings_for, site, wrapped
from fileproc_wsgi import InstructionError
from fileproc_wsgi.errors import ConfigError, SourceNotFoundError
from support import S3_CREDENTIALS, s3_server

KINDS = ["filesystem", "memory", "s3"]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(request, monkeypatch):
    """A new bucket on the module's S3 server, and the endpoint: only for S3 tests."""
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = f"fp-django-{uuid.uuid4().hex[:12]}"
    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=name)
    client.close()
    return endpoint, name


@pytest.fixture
def storage(request):
    """The settings of a default storage of the parametrised kind (``request.param``)."""
    kind = request.param
    if kind == "s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        return settings_for(kind, s3_endpoint=endpoint, bucket=bucket)
    return settings_for(kind)


def _replace(field_file, size: tuple[int, int]) -> None:
    """Write other pixels under the field's very name, as an editor replacing it would."""
    storage, name = field_file.storage, field_file.name
    storage.delete(name)
    assert storage.save(name, jpeg(*size)) == name


@pytest.mark.parametrize("storage", KINDS, indirect=True)
def test_a_field_on_the_storage_renders_is_made_and_a_replaced_file_gets_a_new_url(tmp_path, storage):
    with site(tmp_path, storage):
        app = wrapped()
        item = photo("holiday.jpg", (600, 400))
        PAGE.update(
            source="{% fileprocessor source=item.image alt='x' %}fit 100x100{% endfileprocessor %}",
            context={"item": item},
        )
        page = fetch(app, "/page/")[1].text
        [(url, width, height)] = images(page)
        assert (width, height) == (100, 67)
        assert not (tmp_path / "results").exists(), "rendering the page made the image"
        status, response = fetch(app, url)
        assert status == 301
        assert decode(response.body).size == (100, 67)

        _replace(item.image, (800, 400))
        [(second, width, height)] = images(fetch(app, "/page/")[1].text)
        assert second != url
        assert (width, height) == (100, 50)
        status, response = fetch(app, second)
        assert status == 301
        assert decode(response.body).size == (100, 50)


def test_in_process_jobs_read_the_storage_themselves(tmp_path):
    with site(tmp_path, settings_for("memory"), isolate_jobs=False):
        app = wrapped()
        item = photo("holiday.jpg", (300, 600))
        [(url, width, height)] = images(
            render("{% fileprocessor source=item.image %}fill 50x50{% endfileprocessor %}", {"item": item})
        )
        status, response = fetch(app, url)
        assert (status, decode(response.body).size) == (301, (50, 50))


def test_a_field_with_a_storage_of_its_own_is_read_through_its_root(tmp_path):
    roots = {"media": "django:default", "archive": "django:django_photos.Photo.archive"}
    with site(tmp_path, settings_for("filesystem"), source_roots=roots):
        app = wrapped()
        item = photo(name="")
        item.archive.save("old.jpg", jpeg(200, 100), save=False)
        html = render(
            "{% fileprocessor source=item.archive %}fit 40x40{% endfileprocessor %}", {"item": item}
        )
        [(url, width, height)] = images(html)
        assert (width, height) == (40, 20)
        status, response = fetch(app, url)
        assert (status, decode(response.body).size) == (301, (40, 20))


@pytest.mark.parametrize("storage", KINDS, indirect=True)
def test_backend_versions_opens_and_misses_through_the_storage(tmp_path, storage):
    from fileproc_django.storages import open_storage

    with site(tmp_path, storage):
        item = photo("a.jpg", (60, 40))
        backend = open_storage("default")
        name = item.image.name
        first = backend.version(name)
        assert backend.version(name) == first
        with backend.open(name) as handle:
            assert decode(handle.read()).size == (60, 40)
        _replace(item.image, (70, 40))
        assert backend.version(name) != first
        with pytest.raises(SourceNotFoundError, match="'photos/missing.jpg'"):
            backend.version("photos/missing.jpg")
        with pytest.raises(SourceNotFoundError, match="'photos/missing.jpg'"):
            backend.open("photos/missing.jpg")
        assert backend.label.endswith(f"({storage['STORAGES']['default']['BACKEND'].rsplit('.', 1)[1]})")


@pytest.mark.parametrize(
    ("storage", "local"),
    [
        pytest.param("filesystem", True, id="filesystem"),
        pytest.param("memory", False, id="memory"),
        pytest.param("s3", False, id="s3"),
    ],
    indirect=["storage"],
)
def test_only_a_file_system_storage_is_a_local_directory(tmp_path, storage, local):
    from fileproc_django.storages import open_storage

    with site(tmp_path, storage):
        assert open_storage("default").local_directory() == (str(tmp_path / "media") if local else None)


def test_a_file_system_storage_naming_files_its_own_way_is_read_through_its_api(tmp_path):
    from django.core.files.storage import FileSystemStorage

    from fileproc_django.storages import DjangoStorage

    class Flat(FileSystemStorage):
        def path(self, name):
            return super().path(name.replace("/", "_"))

    assert DjangoStorage(Flat(location=str(tmp_path)), "flat").local_directory() is None
    assert DjangoStorage(FileSystemStorage(location=str(tmp_path)), "plain").local_directory() == str(
        tmp_path
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        pytest.param(
            "nowhere",
            "source root 'django:nowhere': expected an alias of STORAGES (default, staticfiles)",
            id="alias",
        ),
        pytest.param("django_photos.Poster.image", "no model django_photos.Poster", id="model"),
        pytest.param("django_photos.Photo.picture", "Photo has no field 'picture'", id="field"),
        pytest.param("django_photos.Photo.title", "Photo.title is not a file field", id="not-a-file"),
    ],
)
def test_a_root_naming_no_storage_is_a_config_error(tmp_path, argument, message):
    from fileproc_django.storages import open_storage

    with (
        site(tmp_path, settings_for("memory")),
        pytest.raises(ConfigError, match=re.escape(message)),
    ):
        open_storage(argument)


@pytest.mark.parametrize(
    ("roots", "field", "expected"),
    [
        pytest.param({"media": "django:default"}, "image", "media:photos/a.jpg", id="storage-root"),
        pytest.param(
            {"media": "django:default", "old": "django:django_photos.Photo.archive"},
            "archive",
            "old:archive/a.jpg",
            id="field-root",
        ),
        pytest.param({"default": "MEDIA"}, "image", "default:photos/a.jpg", id="directory-root"),
        pytest.param({"site": "TMP"}, "image", "site:media/photos/a.jpg", id="directory-above"),
    ],
)
def test_reference_of_a_field_names_the_root_serving_its_storage(tmp_path, roots, field, expected):
    from fileproc_django.storages import reference_of

    (tmp_path / "media").mkdir()
    paths = {"MEDIA": str(tmp_path / "media"), "TMP": str(tmp_path)}
    roots = {root: paths.get(value, value) for root, value in roots.items()}
    with site(tmp_path, settings_for("filesystem"), source_roots=roots):
        item = photo(name="")
        getattr(item, field).save("a.jpg", jpeg(20, 20), save=False)
        assert reference_of(getattr(item, field)) == expected


def test_reference_of_a_field_no_root_serves_names_the_entry_to_add(tmp_path):
    from fileproc_django.storages import reference_of

    with site(tmp_path, settings_for("memory")):
        item = photo(name="")
        item.archive.save("a.jpg", jpeg(20, 20), save=False)
        with pytest.raises(InstructionError) as raised:
            reference_of(item.archive)
        assert str(raised.value).endswith(
            "source= got a file of django_photos.Photo.archive (InMemoryStorage) that no source root"
            ' serves; add "photo": "django:django_photos.Photo.archive" to FILEPROCESSOR["source_roots"]'
        )


def test_reference_of_anything_else(tmp_path):
    from fileproc_django.storages import reference_of

    with site(tmp_path, settings_for("memory")):
        assert reference_of(photo(name="").image) == ""
        assert reference_of(photo(name="")) is None
        assert reference_of(io.BytesIO(b"x")) is None


def test_a_field_no_root_serves_is_an_error_with_debug_and_the_empty_branch_without(tmp_path, caplog):
    template = "{% fileprocessor source=item.archive %}fit 40x40{% empty %}none{% endfileprocessor %}"
    with site(tmp_path, settings_for("memory")):
        item = photo(name="")
        item.archive.save("a.jpg", jpeg(20, 20), save=False)
        with caplog.at_level(logging.WARNING):
            assert render(template, {"item": item}) == "none"
        assert 'add "photo": "django:django_photos.Photo.archive"' in caplog.text
    with site(tmp_path, settings_for("memory"), debug=True):
        with pytest.raises(InstructionError, match="no source root serves"):
            render(template, {"item": item})
