"""`python -m services.fulfillment`: serve the fulfillment service on its port."""

from services.fulfillment.app import bootstrap, build_app
from services.fulfillment.settings import FulfillmentSettings
from shared.service import serve

settings = FulfillmentSettings()
serve(build_app(bootstrap(settings)), settings, "fulfillment", settings.fulfillment_port)
