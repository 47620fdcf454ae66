"""An example Django site: a gallery page of thumbnails made by fileproc_django.

Run it with ``python examples/django_site/serve.py`` (see serve.py for the options).
"""
