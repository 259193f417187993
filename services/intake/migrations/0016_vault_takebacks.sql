-- Card ids handed to the vault whose order has not committed (services/intake/takeback.py).
-- A row is committed before the vault call and deleted by the order's own transaction: an
-- order that commits leaves none, one that fails leaves its row, which the take-back worker
-- retries until keymgmt confirms the records are deleted. Card ids only, no cardholder data.
CREATE TABLE IF NOT EXISTS {schema}.vault_takebacks (
    id bigserial PRIMARY KEY,
    issuer_id text NOT NULL,
    card_ids uuid[] NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_at timestamptz NOT NULL DEFAULT now() + interval '5 seconds'
);
CREATE INDEX IF NOT EXISTS vault_takebacks_due ON {schema}.vault_takebacks (next_at);
