"""Card-face design and layout: pure domain, no I/O (DOMAIN.md, graphical personalization).

A design places text fields on an ID-1 card face at 300 dpi (85.60 x 53.98 mm, 1011 x 638 px).
The PAN arrives from keymgmt already masked; a design can show less of it, never more.
Printing a full PAN would need keymgmt to release it to the printer path, which this pass
does not offer: `check_masked_pan` refuses anything that looks clear.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CARD_WIDTH_PX = 1011
CARD_HEIGHT_PX = 638
DPI = 300
TRACK1_NAME_MAX = 26  # the name on track 1 of a payment card (ISO/IEC 7813)

Colour = str  # "#rrggbb"
_COLOUR = r"^#[0-9a-fA-F]{6}$"
FieldKind = Literal["cardholder_name", "pan", "expiry", "issuer_name", "label", "cvv2"]
PanDisplay = Literal["masked", "last4"]


class Background(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    colour: Colour = Field(pattern=_COLOUR)
    gradient_to: Colour | None = Field(default=None, pattern=_COLOUR)
    direction: Literal["vertical", "horizontal"] = "vertical"


class TextField(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FieldKind
    x: int = Field(ge=0, lt=CARD_WIDTH_PX)
    y: int = Field(ge=0, lt=CARD_HEIGHT_PX)
    font_size: int = Field(ge=8, le=200)
    colour: Colour | None = Field(default=None, pattern=_COLOUR)
    pan_display: PanDisplay = "masked"
    text: str | None = Field(default=None, max_length=64, description="for kind 'label'")

    @model_validator(mode="after")
    def _label_has_text(self) -> TextField:
        if self.kind == "label" and not self.text:
            raise ValueError("a label field needs text")
        return self


class PhotoBox(BaseModel):
    """Where the cardholder's photo goes; the photo is scaled and centre-cropped to fill it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x: int = Field(ge=0, lt=CARD_WIDTH_PX)
    y: int = Field(ge=0, lt=CARD_HEIGHT_PX)
    width: int = Field(ge=40, le=CARD_WIDTH_PX)
    height: int = Field(ge=40, le=CARD_HEIGHT_PX)

    @model_validator(mode="after")
    def _on_the_card(self) -> PhotoBox:
        if self.x + self.width > CARD_WIDTH_PX or self.y + self.height > CARD_HEIGHT_PX:
            raise ValueError("the photo box runs off the card")
        return self


class CardDesign(BaseModel):
    """One issuer's card face. Stored as JSON in the service's schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    design_id: str = Field(min_length=1, max_length=64)
    issuer_name: str = Field(min_length=1, max_length=64)
    background: Background
    text_colour: Colour = Field(default="#ffffff", pattern=_COLOUR)
    fields: tuple[TextField, ...] = Field(min_length=1, max_length=32)
    photo: PhotoBox | None = Field(
        default=None, description="a photo box: every card then needs a photo (PUT /v1/photos)"
    )


def default_design(issuer_name: str) -> CardDesign:
    """The face printed for an issuer that has not supplied a design of its own."""
    return CardDesign(
        design_id="default",
        issuer_name=issuer_name[:64],
        background=Background(colour="#1f3a5f", gradient_to="#4a7ab0"),
        fields=(
            TextField(kind="issuer_name", x=60, y=50, font_size=44),
            TextField(kind="pan", x=60, y=330, font_size=58),
            TextField(kind="label", x=520, y=430, font_size=20, text="VALID THRU"),
            TextField(kind="expiry", x=520, y=455, font_size=40),
            TextField(kind="cardholder_name", x=60, y=530, font_size=42),
        ),
    )


class ClearPanRefused(ValueError):
    """The value meant to be a masked PAN shows more than first six and last four digits."""


def check_masked_pan(masked_pan: str) -> str:
    """A masked PAN shows at most first 6 + last 4 digits and masks the rest (PCI DSS 3.4)."""
    compact = masked_pan.replace(" ", "")
    if not re.fullmatch(r"[0-9*]{13,19}", compact):
        raise ClearPanRefused("masked PAN is not 13-19 digits and '*'")
    shown = sum(ch.isdigit() for ch in compact)
    if shown > 10 or "*" not in compact:
        raise ClearPanRefused("PAN is not masked: refusing to print it")
    if any(ch.isdigit() for ch in compact[6:-4]):
        raise ClearPanRefused("masked PAN shows digits in its middle")
    return compact


def pan_text(masked_pan: str, display: PanDisplay) -> str:
    """The PAN as printed, in groups of four: masked as keymgmt gave it, or only the last 4."""
    compact = check_masked_pan(masked_pan)
    if display == "last4":
        compact = "*" * (len(compact) - 4) + compact[-4:]
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def expiry_text(expiry_yymm: str) -> str:
    """keymgmt gives YYMM; a card face shows MM/YY."""
    if not re.fullmatch(r"\d{4}", expiry_yymm) or not 1 <= int(expiry_yymm[2:]) <= 12:
        raise ValueError(f"expiry {expiry_yymm!r} is not YYMM")
    return f"{expiry_yymm[2:]}/{expiry_yymm[:2]}"


def name_text(cardholder_name: str) -> str:
    """Upper case, single spaces, at most the 26 characters track 1 can carry."""
    name = " ".join(cardholder_name.split()).upper()
    if not name:
        raise ValueError("cardholder name is empty")
    return name[:TRACK1_NAME_MAX]


def cvv2_text(cvv2: str) -> str:
    """The CVV2 as printed: its three digits (ValueError without naming them)."""
    if not re.fullmatch(r"\d{3}", cvv2):
        raise ValueError("the CVV2 from keymgmt is not 3 digits")
    return cvv2


@dataclass(frozen=True)
class FaceData:
    cardholder_name: str
    masked_pan: str
    expiry: str  # YYMM
    photo: bytes | None = None  # PNG or JPEG, for a design with a photo box
    # From keymgmt's print view, for a "cvv2" field only; never logged, purged with the render.
    cvv2: str | None = dataclasses.field(default=None, repr=False)


@dataclass(frozen=True)
class PlacedText:
    text: str
    x: int
    y: int
    font_size: int
    colour: Colour


def lay_out_face(design: CardDesign, data: FaceData) -> list[PlacedText]:
    """Every text of the face at its place. Raises ValueError on data a card cannot carry."""
    placed: list[PlacedText] = []
    for field in design.fields:
        if field.kind == "cardholder_name":
            text = name_text(data.cardholder_name)
        elif field.kind == "pan":
            text = pan_text(data.masked_pan, field.pan_display)
        elif field.kind == "expiry":
            text = expiry_text(data.expiry)
        elif field.kind == "cvv2":
            if data.cvv2 is None:
                continue  # the product has no CVK pair: no CVV2 to print
            text = cvv2_text(data.cvv2)
        elif field.kind == "issuer_name":
            text = design.issuer_name
        else:
            text = field.text or ""
        colour = field.colour or design.text_colour
        placed.append(PlacedText(text, field.x, field.y, field.font_size, colour))
    return placed
