-- Offline data authentication (EMV Book 2; docs/emv-profile.md).

-- The certification authority public keys the bureau trusts, by RID and index.
CREATE TABLE IF NOT EXISTS {schema}.ca_public_keys (
    rid text NOT NULL CHECK (rid ~ '^[0-9A-F]{10}$'),
    ca_index text NOT NULL CHECK (ca_index ~ '^[0-9A-F]{2}$'),
    modulus bytea NOT NULL,
    exponent bytea NOT NULL,
    expires date NOT NULL,
    source text NOT NULL CHECK (source IN ('scheme', 'test-ca')),
    added_by text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rid, ca_index)
);

-- An issuer's public key certificate (format '02') for its RSA key in the HSM.
CREATE TABLE IF NOT EXISTS {schema}.issuer_certificates (
    issuer_id text NOT NULL,
    key_label text NOT NULL,
    rid text NOT NULL,
    ca_index text NOT NULL,
    certificate bytea NOT NULL,
    remainder bytea NOT NULL,
    exponent bytea NOT NULL,
    serial text NOT NULL,
    expires date NOT NULL,
    origin text NOT NULL CHECK (origin IN ('imported', 'test-ca')),
    added_by text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer_id, key_label),
    FOREIGN KEY (rid, ca_index) REFERENCES {schema}.ca_public_keys (rid, ca_index)
);

-- Pre-generated ICC key pairs: the private key only wrapped under the pool key
-- (CKM_AES_KEY_WRAP_PAD), the public part clear. A card's draw sets taken_by.
CREATE TABLE IF NOT EXISTS {schema}.icc_key_pool (
    id bigserial PRIMARY KEY,
    pool_key_label text NOT NULL,
    bits integer NOT NULL,
    modulus bytea NOT NULL,
    exponent bytea NOT NULL,
    wrapped bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    taken_by uuid UNIQUE,
    taken_at timestamptz
);
CREATE INDEX IF NOT EXISTS icc_key_pool_free ON {schema}.icc_key_pool (id) WHERE taken_by IS NULL;

-- A prepared card's ODA data: the signed ICC certificate and SDA, the hash of the static
-- data they cover (checked again at personalization), its effective date, its pool key.
CREATE TABLE IF NOT EXISTS {schema}.card_oda (
    card_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    issuer_key_label text NOT NULL,
    pool_id bigint REFERENCES {schema}.icc_key_pool (id),
    effective text NOT NULL,
    static_hash bytea NOT NULL,
    sda bytea,
    icc_certificate bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A card's offline PIN (DGI 8010): the format 2 block wrapped under the PIN storage key.
CREATE TABLE IF NOT EXISTS {schema}.card_offline_pins (
    card_id uuid PRIMARY KEY,
    storage_key_label text NOT NULL,
    wrapped bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
