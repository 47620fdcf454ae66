"""Photos whose image fields live on the test's storages.

``image`` uses the default storage (``STORAGES["default"]``, which each test points at
FileSystemStorage, InMemoryStorage or S3Storage); ``archive`` has a storage of its own,
reachable only through a ``django:django_photos.Photo.archive`` root. ``Document.file``
is a plain FileField, as a site keeps SVGs and office documents (an ImageField validates
uploads with Pillow, which reads neither).
"""

from django.core.files.storage import InMemoryStorage
from django.db import models

ARCHIVE = InMemoryStorage()


class Photo(models.Model):
    title = models.CharField(max_length=200, blank=True)
    image = models.ImageField(upload_to="photos", blank=True)
    archive = models.ImageField(upload_to="archive", blank=True, storage=ARCHIVE)

    class Meta:
        app_label = "django_photos"


class Document(models.Model):
    file = models.FileField(upload_to="documents", blank=True)

    class Meta:
        app_label = "django_photos"
