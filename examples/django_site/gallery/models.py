"""A photo as a Django project keeps one: a title and an ImageField on the default storage."""

from django.db import models


class Photo(models.Model):
    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    # Optional, as a profile picture is: the template's {% empty %} branch covers a row without one.
    image = models.ImageField(upload_to="photos", blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title
