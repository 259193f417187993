"""`python -m services.keymgmt`: serve keymgmt on its port (8102);
`python -m services.keymgmt ceremony ...`: the key custodians' CLI (keys/cli.py).
"""

import logging
import sys

import uvicorn
import uvloop

from services.keymgmt.app import bootstrap, build_app
from services.keymgmt.hsm.mechanisms import ProductionRefused
from services.keymgmt.hsm.process import production_check
from services.keymgmt.keys.cli import main as ceremony
from services.keymgmt.settings import KeymgmtSettings
from shared.logs import configure_logging
from shared.service import server_options
from shared.telemetry import configure_tracing


async def serve_keymgmt(settings: KeymgmtSettings) -> None:
    # Built inside the running loop: aiokafka clients bind to the loop that makes them
    # (as in services/graphical/__main__.py).
    configure_logging("keymgmt", settings.log_level)
    configure_tracing("keymgmt", settings.trace_file)
    await production_check(settings)  # ProductionRefused: no port is opened
    app = build_app(bootstrap(settings))
    await uvicorn.Server(uvicorn.Config(app, **server_options(settings, settings.port))).serve()


def main(argv: list[str]) -> int:
    if argv[:1] == ["ceremony"]:
        return ceremony(argv[1:])
    try:
        uvloop.run(serve_keymgmt(KeymgmtSettings()))  # the loop server_options names
    except ProductionRefused as exc:
        logging.getLogger("services.keymgmt").critical("%s", exc)
        sys.stderr.write(f"REFUSED: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
