from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "django_site.gallery"
    label = "gallery"
    default_auto_field = "django.db.models.BigAutoField"
