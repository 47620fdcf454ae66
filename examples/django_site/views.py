"""The gallery view: the template decides how each picture is shown."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

# The sources fileproc_wsgi.demo.make_samples writes; the titles show that tag
# arguments are escaped ('&', quotes) while the instructions are not.
PHOTOS = {
    "landscape": {"path": "landscape.jpg", "title": 'Hills & sun, "at dusk"'},
    "phone": {"path": "phone.jpg", "title": "A phone picture stored sideways"},
    "logo": {"path": "logo.png", "title": "A transparent logo"},
}


def gallery(request: HttpRequest) -> HttpResponse:
    return render(request, "gallery.html", PHOTOS)
