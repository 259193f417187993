-- SIM products: the operator's OP (sealed under the vault key, bound to issuer and product),
-- the operator transport key that protects the output file, and the issuer's ICCID/IMSI range.
CREATE TABLE IF NOT EXISTS {schema}.sim_products (
    issuer_id text NOT NULL,
    product_id text NOT NULL,
    op_sealed bytea NOT NULL,
    transport_key_label text NOT NULL,
    iccid_prefix text NOT NULL,
    iccid_length integer NOT NULL DEFAULT 19 CHECK (iccid_length BETWEEN 18 AND 20),
    imsi_prefix text NOT NULL,
    first_serial bigint NOT NULL CHECK (first_serial >= 0),
    last_serial bigint NOT NULL,
    next_serial bigint NOT NULL,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer_id, product_id),
    CHECK (first_serial <= next_serial AND next_serial <= last_serial + 1)
);

CREATE TABLE IF NOT EXISTS {schema}.sim_batches (
    batch_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    product_id text NOT NULL,
    count integer NOT NULL,
    first_iccid text NOT NULL,
    last_iccid text NOT NULL,
    transport_key_label text NOT NULL,
    transport_kcv text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per SIM: Ki and OPc only ever wrapped (RFC 3394) in the HSM, under the bureau's
-- SIM storage key (for personalisation and QA) and under the operator's transport key.
CREATE TABLE IF NOT EXISTS {schema}.sim_cards (
    iccid text PRIMARY KEY,
    imsi text NOT NULL UNIQUE,
    batch_id uuid NOT NULL REFERENCES {schema}.sim_batches,
    issuer_id text NOT NULL,
    product_id text NOT NULL,
    storage_key_label text NOT NULL,
    ki_stored bytea NOT NULL,
    opc_stored bytea NOT NULL,
    transport_key_label text NOT NULL,
    ki_transport bytea NOT NULL,
    opc_transport bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sim_cards_by_batch ON {schema}.sim_cards (batch_id);
