"""A card taken through the bureau to dispatch, in this process on the real stack, for the
retention tests: the settings of graphical and fulfillment pointed at a keymgmt served over HTTP
on a loopback port (tests/support/loopback.py), which they call as they would another process;
the issuer's PIN keys for mailers: tests/support/keymgmt.py load_security_keys."""

from __future__ import annotations

from pathlib import Path

from services.fulfillment.settings import FulfillmentSettings
from services.graphical.settings import GraphicalSettings
from tests.support.printer import TestPrinter


def graphical_for(unique: str, keymgmt_url: str, printer: TestPrinter) -> GraphicalSettings:
    return GraphicalSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        service_tokens=f"graphical=gr-{unique}",
        principals=f"operator:olga=op-{unique}",
        keymgmt_url=keymgmt_url,
        card_printer_uri=printer.uri,
        card_printer_ca=printer.ca,
        graphical_printer="test-card",
        print_backoff_s=0.1,
        print_backoff_max_s=0.5,
    )


def fulfillment_for(unique: str, keymgmt_url: str, files: Path) -> FulfillmentSettings:
    return FulfillmentSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        service_tokens=f"fulfillment=fu-{unique}",
        principals=f"operator:olga=op-{unique}",
        keymgmt_url=keymgmt_url,
        run_dir=files,
        fulfillment_manifest_dir=files / "manifests",
        fulfillment_inserter_dir=files / "inserter",
        fulfillment_courier="swift-post",
    )
