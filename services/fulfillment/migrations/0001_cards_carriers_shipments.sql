-- Where each card stands in fulfillment. One row per card; final states are dispatched and
-- destroyed (every card ends in one of them: DOMAIN.md, counting).
CREATE TABLE IF NOT EXISTS {schema}.cards (
    card_id uuid PRIMARY KEY,
    batch_id uuid NOT NULL,
    issuer_id text NOT NULL,
    state text NOT NULL
        CHECK (state IN ('packed', 'awaiting_destruction', 'destroyed', 'dispatched')),
    chip_serial text,
    carrier_id text UNIQUE,
    reason text,
    shipment_id uuid,
    witnesses text[],
    destroyed_by text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'destroyed' OR cardinality(witnesses) = 2),
    CHECK (state <> 'dispatched' OR shipment_id IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS cards_batch_state ON {schema}.cards (batch_id, state);

-- Carrier letters. The cardholder's name and address are kept only to print the carrier and
-- its envelope, and are purged when the shipment leaves.
CREATE TABLE IF NOT EXISTS {schema}.carriers (
    carrier_id text PRIMARY KEY,
    card_id uuid NOT NULL UNIQUE,
    batch_id uuid NOT NULL,
    cardholder_name text,
    address jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    purged_at timestamptz
);

-- Audit's verdict on each batch: dispatch waits for 'reconciled'; 'held' blocks it.
CREATE TABLE IF NOT EXISTS {schema}.batches (
    batch_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('reconciled', 'held')),
    counts jsonb NOT NULL DEFAULT '{}'::jsonb,
    problems jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {schema}.shipments (
    shipment_id uuid PRIMARY KEY,
    batch_id uuid NOT NULL,
    issuer_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('cards', 'pin_mailers')),
    courier text NOT NULL,
    card_count integer NOT NULL CHECK (card_count > 0),
    manifest_sha256 text NOT NULL,
    csv_sha256 text NOT NULL,
    json_path text NOT NULL,
    csv_path text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shipments_batch ON {schema}.shipments (batch_id);
