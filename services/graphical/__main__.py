"""`python -m services.graphical`: serve the graphical service on its port."""

from services.graphical.app import bootstrap, build_app
from services.graphical.settings import GraphicalSettings
from shared.service import serve

settings = GraphicalSettings()
serve(build_app(bootstrap(settings)), settings, "graphical", settings.graphical_port)
