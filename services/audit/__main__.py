"""`python -m services.audit`: serve the audit service on its port (8107)."""

from services.audit.app import NAME, bootstrap, build_app
from services.audit.settings import AuditSettings
from shared.service import serve

settings = AuditSettings()
serve(build_app(bootstrap(settings)), settings, NAME, settings.audit_port)
