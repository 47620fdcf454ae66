"""A Django app for the tests of fileproc_django: one model with optional image fields."""
