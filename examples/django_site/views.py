"""The gallery view: the photos from the database; the template decides how each is shown."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from django_site.gallery.models import Photo


def gallery(request: HttpRequest) -> HttpResponse:
    photos = list(Photo.objects.all())
    # Each photo by its slug as well, for the template's showcase of one feature each.
    return render(request, "gallery.html", {"photos": photos, **{photo.slug: photo for photo in photos}})
