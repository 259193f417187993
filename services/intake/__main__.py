from services.intake.app import NAME, bootstrap, build_app
from services.intake.settings import IntakeSettings
from shared.service import serve

settings = IntakeSettings()
serve(build_app(bootstrap(settings)), settings, NAME, settings.port)
