"""Regenerate the README's images with the services' own renderers (demo data, a fake PIN):

.venv/bin/python docs/images/generate.py
"""

from __future__ import annotations

import uuid
from pathlib import Path

from services.fulfillment.carrier import CarrierLetter, rasterise, render_carrier
from services.graphical.api import sample_photo
from services.graphical.render import FaceRenderer
from services.graphical.service import FaceData, PhotoBox, default_design
from services.graphical.settings import DEJAVU_SANS
from services.keymgmt.pin_mailer.service import MailerText, render_pin_mailer

HERE = Path(__file__).parent
DEMO_CARD = uuid.UUID("00000000-0000-4000-8000-00000000d3e0")
ADDRESS = ("12 Demo Street", "1000 Brussels", "BE")

design = default_design("Demo Bank").model_copy(
    update={"photo": PhotoBox(x=800, y=40, width=165, height=220)}
)
face = FaceRenderer(DEJAVU_SANS).draw(  # the face's pixels; the printer gets them as JPEG
    design, FaceData("ADA LOVELACE", "400000******0002", "3011", sample_photo())
)
face.save(HERE / "card-face.png", optimize=True)
letter = CarrierLetter(
    DEMO_CARD, "4D21A0B3C4F5", "CR-7F3A-19C2-0B44-E1D0", "ADA LOVELACE", ADDRESS, "Demo Bank"
)
rasterise(render_carrier(letter), dpi=100).save(HERE / "carrier-letter.png", optimize=True)
demo_pin = bytearray((1, 2, 3, 4))  # a fake PIN on a demo card
(HERE / "pin-mailer.png").write_bytes(
    render_pin_mailer(MailerText("Demo Bank", "ADA LOVELACE", ADDRESS, "0002"), demo_pin)
)
