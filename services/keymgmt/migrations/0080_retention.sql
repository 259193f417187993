-- Retention per PCI Card Production (logical security): what keymgmt learns of each card's
-- life from the other services' events, so that sensitive authentication data (CVV, iCVV,
-- PIN blocks) is deleted once the card is personalized and its PIN mailer printed (or the card
-- destroyed or cancelled), and cardholder data (PAN, name, address) a per-issuer window after
-- dispatch (services/keymgmt/vault/retention.py).
CREATE TABLE IF NOT EXISTS {schema}.card_retention (
    card_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    personalized_at timestamptz,
    finished_at timestamptz,
    dispatched_at timestamptz,
    sad_purged_at timestamptz,
    cardholder_purged_at timestamptz
);
CREATE INDEX IF NOT EXISTS card_retention_sad_due ON {schema}.card_retention (card_id)
    WHERE sad_purged_at IS NULL;
CREATE INDEX IF NOT EXISTS card_retention_cardholder_due
    ON {schema}.card_retention (dispatched_at) WHERE cardholder_purged_at IS NULL;

-- How long an issuer's cardholder data stays after dispatch (else the service's default).
CREATE TABLE IF NOT EXISTS {schema}.retention_policies (
    issuer_id text PRIMARY KEY,
    cardholder_days integer NOT NULL CHECK (cardholder_days BETWEEN 0 AND 3650),
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
