"""Settings of the keymgmt service (BUREAU_* environment variables, plus OPENSSL_CONF)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.keymgmt.hsm.mechanisms import LUNA_XOR_BASE_AND_KEY
from services.keymgmt.hsm.session import RECYCLE_CALLS, Hsm
from services.keymgmt.perso.stations import station_names
from shared.settings import BureauSettings

MIGRATIONS = Path(__file__).parent / "migrations"  # app.MIGRATIONS is this one

# PINs that come with the local stack or SoftHSM examples: never acceptable outside dev/test.
DEV_HSM_PINS = frozenset({"1234", "0000", "123456", "12345678", "24681357"})


class KeymgmtSettings(BureauSettings):
    model_config = SettingsConfigDict(env_prefix="BUREAU_", extra="ignore", populate_by_name=True)

    port: int = Field(default=8102, validation_alias=AliasChoices("BUREAU_KEYMGMT_PORT", "port"))
    keymgmt_schema: str = Field(default="keymgmt", description="the Postgres schema it owns")
    # Every station and QA position calls keymgmt at once, and a call keeps its connection
    # while it waits its turn on the one HSM worker: with 10 kept, a 1,000-card run opened
    # ~5 connections a second (each a fork, SCRAM and statements prepared again).
    database_pool_size: int = Field(default=24, ge=1, le=50)
    pkcs11_module: str = Field(
        default="/usr/lib/softhsm/libsofthsm2.so", description="BUREAU_PKCS11_MODULE"
    )
    hsm_token: str = Field(default="bureau", description="BUREAU_HSM_TOKEN: token label")
    hsm_pin: str = Field(default="1234", repr=False, description="BUREAU_HSM_PIN: user PIN")
    openssl_conf: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENSSL_CONF", "openssl_conf"),
        description="OpenSSL config activating the legacy provider (single DES, retail MAC)",
    )
    hsm_recycle_calls: int = Field(
        default=RECYCLE_CALLS,
        ge=0,
        description="on SoftHSM, re-initialize the PKCS#11 library after this many HSM calls: "
        "only C_Finalize frees its destroyed session objects (hsm/session.py; 0: never)",
    )
    # Bureau-owned keys: generated inside the HSM at startup when absent.
    vault_key_label: str = "bureau/VAULT/1"
    pan_hash_key_label: str = "bureau/PANHASH/1"
    # Shared with the card manufacturer, so it is loaded by key ceremony, never generated.
    kmc_label: str = "bureau/KMC/1"
    # Wraps every SIM's Ki and OPc for keymgmt's table; generated on the first SIM batch.
    sim_kek_label: str = "bureau/SIMKEK/1"
    # Key ceremonies: the RSA key-exchange key custodians wrap their components under.
    ceremony_kek_label: str = "bureau/CEREMONYKEK/1"
    hsm_key_xor_mechanism: int = Field(
        default=LUNA_XOR_BASE_AND_KEY,
        description="vendor CKM_ code of C_DeriveKey XOR of two keys (ceremony combination)",
    )
    service_code: str = Field(
        default="201", pattern=r"^\d{3}$", description="track 2 service code of EMV cards"
    )
    intake_url: str = Field(
        default="http://127.0.0.1:8101",
        description="BUREAU_INTAKE_URL: where issuer tokens are verified (GET /v1/whoami), so"
        " an operator fetches its SIM output file with its own token; empty: configured"
        " principals only",
    )
    icc_pool_low: int = Field(
        default=0, ge=0, description="refill the ICC key pool when fewer free pairs (0: never)"
    )
    icc_pool_target: int = Field(default=0, ge=0, description="free ICC pairs after a refill")
    hsm_retry_seconds: float = Field(default=5.0, gt=0, description="wait between HSM opens")
    hsm_ping_timeout_seconds: float = Field(default=5.0, gt=0, description="readiness probe")
    # Retention (vault/retention.py): days cardholder data stays after dispatch unless the
    # issuer's policy says otherwise, and how often the purge job runs.
    # Station planning (docs/keymgmt.md): the encoding stations a batch is assigned to when
    # its cards are prepared, comma separated station ids; empty: a batch waits for a planner.
    perso_stations: str = Field(
        default="",
        description="BUREAU_PERSO_STATIONS: stations each newly prepared batch is assigned to",
    )
    cardholder_retention_days: int = Field(default=90, ge=0, le=3650)
    retention_purge_interval_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _check_hsm_settings(self) -> KeymgmtSettings:
        if not self.hsm_pin:
            raise ValueError("hsm_pin is empty: keymgmt always logs in to its token")
        if self.environment not in ("dev", "test") and (
            self.hsm_pin in DEV_HSM_PINS or "dev" in self.hsm_pin
        ):
            raise ValueError(f"hsm_pin is still a development PIN in {self.environment}")
        station_names(self.perso_stations)  # ValueError names a malformed station id
        if self.vault_key_label.split("/")[1:2] != ["VAULT"]:
            raise ValueError("vault_key_label must look like <owner>/VAULT/<version>")
        return self

    @property
    def hsm_only(self) -> bool:
        """Production: no clear component, PIN, PIN block or OP may exist in the process, so
        keymgmt starts only on a token that runs every such operation (hsm/mechanisms.py)."""
        return self.environment not in ("dev", "test")

    @property
    def default_stations(self) -> list[str]:
        """The stations a newly prepared batch is assigned to (BUREAU_PERSO_STATIONS)."""
        return station_names(self.perso_stations)

    def make_hsm(self) -> Hsm:
        return Hsm(
            self.pkcs11_module,
            self.hsm_token,
            self.hsm_pin,
            self.openssl_conf,
            recycle_calls=self.hsm_recycle_calls,
        )
