-- Product profiles: the issuer's choices for PINs and card verification values. Products
-- without a row here get neither (EMV keys only); SIM products are in sim_products.
CREATE TABLE IF NOT EXISTS {schema}.card_products (
    issuer_id text NOT NULL,
    product_id text NOT NULL,
    pin_length integer NOT NULL DEFAULT 4 CHECK (pin_length BETWEEN 4 AND 12),
    pin_formats text[] NOT NULL DEFAULT '{}',
    pin_verification text NOT NULL DEFAULT 'none'
        CHECK (pin_verification IN ('none', 'visa-pvv', 'ibm-3624-offset')),
    pvki text NOT NULL DEFAULT '1',
    decimalisation text NOT NULL DEFAULT '0123456789012345',
    validation_offset integer,
    validation_length integer NOT NULL DEFAULT 12,
    cvv boolean NOT NULL DEFAULT false,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer_id, product_id)
);

-- A card's PIN exists only as encrypted ISO 9564-1 blocks (each with the label of the key
-- it is under) and the issuer's verification data. The clear PIN is never stored.
CREATE TABLE IF NOT EXISTS {schema}.card_pins (
    card_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    iso0_block bytea,
    iso0_key_label text,
    iso4_block bytea,
    iso4_key_label text,
    pvki text,
    pvv text,
    ibm_offset text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (iso0_block IS NOT NULL OR iso4_block IS NOT NULL)
);

-- CVV, iCVV and CVV2 sealed together under the card's vault key (AES-256-GCM, bound to
-- the card and issuer); the CVK halves that made them are named, never held.
CREATE TABLE IF NOT EXISTS {schema}.card_verification_values (
    card_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    cvk_a_label text NOT NULL,
    cvk_b_label text NOT NULL,
    sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
