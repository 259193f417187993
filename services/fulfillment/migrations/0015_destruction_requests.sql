-- Maker-checker destruction (issue 15): one operator requests the destruction of cards awaiting
-- it, a second, different operator confirms it; each is the principal its own token names
-- (role:name), never a typed name. A confirmation by the requester is refused and kept here.
CREATE TABLE IF NOT EXISTS {schema}.destruction_requests (
    request_id uuid PRIMARY KEY,
    card_ids uuid[] NOT NULL CHECK (cardinality(card_ids) >= 1),
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed')),
    confirmed_by text,
    confirmed_at timestamptz,
    CHECK (state = 'pending' OR (confirmed_by IS NOT NULL AND confirmed_by <> requested_by))
);

-- Every refused confirmation (the requester confirming their own request, ...): who and why.
CREATE TABLE IF NOT EXISTS {schema}.destruction_refusals (
    id bigserial PRIMARY KEY,
    request_id uuid NOT NULL REFERENCES {schema}.destruction_requests (request_id),
    refused_principal text NOT NULL,
    reason text NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now()
);
