-- Cardholder photos, uploaded by the issuer per card for designs with a photo box. Kept only
-- until the card's face is printed or spoiled (services/graphical/printing.py purges them).
CREATE TABLE IF NOT EXISTS {schema}.photos (
    card_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    photo bytea NOT NULL,
    sha256 text NOT NULL,
    uploaded_by text NOT NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now()
);
