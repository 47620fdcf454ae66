"""fileproc_flask: the ``{% fileprocessor %}`` block, its middleware and ``flask fileproc`` for Flask.

With an app factory::

    from fileproc_flask import FileProcessor

    fileproc = FileProcessor()

    def create_app():
        app = Flask(__name__)
        # optional: the "default" root; absolute, as the app's own file.save() uses it too
        app.config["UPLOAD_FOLDER"] = os.path.join(app.instance_path, "uploads")
        fileproc.init_app(app)
        return app

    {% fileprocessor source=user.picture alt=user.name %}fill 80x80{% empty %}…{% endfileprocessor %}

Settings are ``app.config["FILEPROC_<FIELD>"]`` for the fields of
:class:`fileproc_wsgi.Config`; the store and the results default to the instance folder.
``flask fileproc stats`` (and every other ``fileproc`` command) runs on the same settings.
"""

from __future__ import annotations

from .extension import FileProcessor
from .settings import config_from_app

__all__ = ["FileProcessor", "config_from_app"]
