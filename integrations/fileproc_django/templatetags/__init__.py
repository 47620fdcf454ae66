"""Template libraries of fileproc_django: ``{% load fileprocessor %}``."""
