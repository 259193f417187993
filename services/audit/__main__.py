"""`python -m services.audit`: serve the audit service on its port (8107)."""

from services.audit.app import bootstrap, build_app
from services.audit.settings import AuditSettings
from shared.service import serve


def main() -> None:
    settings = AuditSettings()
    serve(build_app(bootstrap(settings)), settings, "audit", settings.audit_port)


if __name__ == "__main__":
    main()
