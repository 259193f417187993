"""`python -m services.electrical`: serve the electrical floor agent on its port."""

from services.electrical.app import bootstrap, build_app
from services.electrical.settings import ElectricalSettings
from shared.service import serve

settings = ElectricalSettings()
serve(build_app(bootstrap(settings)), settings, "electrical", settings.electrical_port)
