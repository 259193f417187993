-- Card status projection, fed by the lifecycle events intake consumes. The rank only grows,
-- so events arriving out of order across topics never move a card backwards.
ALTER TABLE {schema}.cards ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'ordered';
ALTER TABLE {schema}.cards ADD COLUMN IF NOT EXISTS status_rank integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.cards ADD COLUMN IF NOT EXISTS status_at timestamptz;
CREATE INDEX IF NOT EXISTS cards_by_order_status ON {schema}.cards (order_id, status);

ALTER TABLE {schema}.orders ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.orders ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'json';
CREATE INDEX IF NOT EXISTS orders_by_issuer ON {schema}.orders (issuer_id, created_at);

-- What happened to an order's cards, as the issuer may see it (no PAN, no cardholder data).
CREATE TABLE IF NOT EXISTS {schema}.order_events (
    id bigserial PRIMARY KEY,
    order_id uuid NOT NULL,
    issuer_id text NOT NULL,
    event_id uuid NOT NULL,
    type text NOT NULL,
    card_id uuid,
    occurred_at timestamptz NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (event_id, order_id, card_id)
);
CREATE INDEX IF NOT EXISTS order_events_by_order ON {schema}.order_events (order_id, id);

-- One webhook per issuer. The secret signs deliveries, so it cannot be a digest: it is kept
-- sealed (AES-256-GCM under intake's webhook key, bound to the issuer id).
CREATE TABLE IF NOT EXISTS {schema}.webhooks (
    issuer_id text PRIMARY KEY REFERENCES {schema}.issuers,
    url text NOT NULL,
    secret_blob bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The durable webhook outbox: rows are written in the transaction of the milestone.
CREATE TABLE IF NOT EXISTS {schema}.webhook_deliveries (
    id bigserial PRIMARY KEY,
    delivery_id uuid NOT NULL UNIQUE,
    issuer_id text NOT NULL,
    type text NOT NULL,
    body text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    failed_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON {schema}.webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Stock issued to a station (not a batch) and destroyed stock carry their own references.
ALTER TABLE {schema}.stock_movements ADD COLUMN IF NOT EXISTS station_id text;
ALTER TABLE {schema}.stock_movements ADD COLUMN IF NOT EXISTS reason text;
