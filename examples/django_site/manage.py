"""Django's command line for the example, e.g. ``python examples/django_site/manage.py fileproc stats``.

It finds the site serve.py serves, from any directory: ``examples/django_site/instance``,
or the ``--directory`` given to serve.py when it is passed as ``DJANGO_SITE_DIRECTORY``.
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
