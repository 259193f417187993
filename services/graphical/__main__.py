"""`python -m services.graphical`: serve the graphical service on its port (8104)."""

from services.graphical.app import bootstrap, build_app
from services.graphical.settings import GraphicalSettings
from shared.service import serve


def main() -> None:
    settings = GraphicalSettings()
    serve(build_app(bootstrap(settings)), settings, "graphical", settings.graphical_port)


if __name__ == "__main__":
    main()
