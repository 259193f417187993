from services.intake.app import build_app
from services.intake.settings import IntakeSettings
from shared.service import serve

settings = IntakeSettings()
serve(build_app(settings), settings, "intake", settings.port)
