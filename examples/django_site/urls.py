"""The example's one page: the gallery at ``/``. The middleware answers ``/_fp/...``."""

from django.urls import path

from django_site import views

urlpatterns = [path("", views.gallery, name="gallery")]
