"""`python -m services.fulfillment`: serve the fulfillment service on its port (8106)."""

from services.fulfillment.app import bootstrap, build_app
from services.fulfillment.settings import FulfillmentSettings
from shared.service import serve


def main() -> None:
    settings = FulfillmentSettings()
    serve(build_app(bootstrap(settings)), settings, "fulfillment", settings.fulfillment_port)


if __name__ == "__main__":
    main()
