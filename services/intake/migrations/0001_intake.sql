CREATE TABLE IF NOT EXISTS {schema}.issuers (
    issuer_id text PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only SHA-256 digests of issuer API tokens are kept; a token is shown once when created.
CREATE TABLE IF NOT EXISTS {schema}.issuer_credentials (
    digest text PRIMARY KEY,
    issuer_id text NOT NULL REFERENCES {schema}.issuers,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE IF NOT EXISTS {schema}.products (
    issuer_id text NOT NULL REFERENCES {schema}.issuers,
    product_id text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('emv', 'sim')),
    PRIMARY KEY (issuer_id, product_id)
);

CREATE TABLE IF NOT EXISTS {schema}.stock_movements (
    id bigserial PRIMARY KEY,
    issuer_id text NOT NULL,
    product_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('received', 'issued', 'returned', 'destroyed')),
    quantity integer NOT NULL CHECK (quantity > 0),
    lot_id text,
    batch_id uuid,
    actor text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (issuer_id, product_id) REFERENCES {schema}.products
);
CREATE UNIQUE INDEX IF NOT EXISTS stock_lot_received
    ON {schema}.stock_movements (issuer_id, lot_id) WHERE kind = 'received';

CREATE TABLE IF NOT EXISTS {schema}.orders (
    order_id uuid PRIMARY KEY,
    issuer_id text NOT NULL REFERENCES {schema}.issuers,
    external_ref text NOT NULL,
    idempotency_key text NOT NULL,
    request_mac text NOT NULL,
    product_id text NOT NULL,
    card_count integer NOT NULL,
    batch_id uuid NOT NULL UNIQUE,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (issuer_id, idempotency_key)
);

-- Cards keep only the vault token and the masked PAN: the clear PAN never reaches this schema.
CREATE TABLE IF NOT EXISTS {schema}.cards (
    card_id uuid PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES {schema}.orders,
    issuer_id text NOT NULL,
    batch_id uuid NOT NULL,
    sequence integer NOT NULL,
    masked_pan text NOT NULL,
    pan_token text NOT NULL,
    expiry text NOT NULL,
    UNIQUE (order_id, sequence)
);
