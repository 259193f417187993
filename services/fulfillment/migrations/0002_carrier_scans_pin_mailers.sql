-- What the inserter's scanner read on each card's carrier letter (the match check).
ALTER TABLE {schema}.cards ADD COLUMN IF NOT EXISTS carrier_scan text;

-- PIN mailers: keymgmt prints them (only it sees the PIN); fulfillment knows the mailer id and
-- its state. A mailer ships in its own shipment, never with its card; the mailer of a card that
-- is destroyed is withheld (and destroyed with it).
CREATE TABLE IF NOT EXISTS {schema}.pin_mailers (
    card_id uuid PRIMARY KEY,
    mailer_id uuid NOT NULL UNIQUE,
    batch_id uuid NOT NULL,
    issuer_id text NOT NULL,
    state text NOT NULL CHECK (state IN ('printed', 'spoiled', 'dispatched', 'withheld')),
    shipment_id uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'dispatched' OR shipment_id IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS pin_mailers_batch ON {schema}.pin_mailers (batch_id, state);
