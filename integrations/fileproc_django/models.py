"""No models: the instruction store keeps its own tables (see :mod:`fileproc_django.migrate`).

This module exists because Django sends ``post_migrate`` only to apps that have one.
"""
