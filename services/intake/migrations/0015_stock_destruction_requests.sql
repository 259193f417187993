-- Blank stock destroyed under dual control (issue 15): one operator requests the destruction,
-- a second, different operator confirms it; each is the principal its own token names
-- (role:name), never a typed name. The stock moves only on confirmation.
CREATE TABLE IF NOT EXISTS {schema}.stock_destruction_requests (
    request_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    product_id text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    reason text NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed')),
    confirmed_by text,
    confirmed_at timestamptz,
    FOREIGN KEY (issuer_id, product_id) REFERENCES {schema}.products,
    CHECK (state = 'pending' OR (confirmed_by IS NOT NULL AND confirmed_by <> requested_by))
);

-- Every refused confirmation (the requester confirming their own request): who and why.
CREATE TABLE IF NOT EXISTS {schema}.stock_destruction_refusals (
    id bigserial PRIMARY KEY,
    request_id uuid NOT NULL REFERENCES {schema}.stock_destruction_requests (request_id),
    refused_principal text NOT NULL,
    reason text NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now()
);
