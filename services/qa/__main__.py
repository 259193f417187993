"""`python -m services.qa`: serve the qa floor agent on its port."""

from services.qa.app import bootstrap, build_app
from services.qa.settings import QaSettings
from shared.service import serve

settings = QaSettings()
serve(build_app(bootstrap(settings)), settings, "qa", settings.qa_port)
