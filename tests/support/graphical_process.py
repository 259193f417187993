"""`python -m tests.support.graphical_process SCHEMA`: the real graphical service, served as
`python -m services.graphical` serves it (its settings from the environment, its port
BUREAU_GRAPHICAL_PORT), in a database schema of the test's own."""

from __future__ import annotations

import sys

from services.graphical.app import bootstrap, build_app
from services.graphical.settings import GraphicalSettings
from shared.service import serve

if __name__ == "__main__":
    settings = GraphicalSettings()
    serve(
        build_app(bootstrap(settings, schema=sys.argv[1])),
        settings,
        "graphical",
        settings.graphical_port,
    )
