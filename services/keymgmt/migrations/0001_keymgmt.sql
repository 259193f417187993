-- Key inventory: what the bureau may know about a key, never its value (DOMAIN.md, keys).
CREATE TABLE IF NOT EXISTS {schema}.keys (
    label text PRIMARY KEY,
    issuer_id text NOT NULL,
    key_type text NOT NULL,
    usage text NOT NULL,
    kcv text NOT NULL,
    kcv_method text NOT NULL,
    other_kcvs jsonb NOT NULL DEFAULT '[]',
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'destroyed')),
    origin text NOT NULL CHECK (origin IN ('generated', 'ceremony')),
    custodians text[] NOT NULL DEFAULT '{}',
    ceremony_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,
    retired_by text
);
CREATE INDEX IF NOT EXISTS keys_by_issuer ON {schema}.keys (issuer_id);

-- Key ceremonies and their steps: who did what and when, and the outcome. Component values
-- are never stored; a component's KCV is (it is on the custodian's form anyway).
CREATE TABLE IF NOT EXISTS {schema}.ceremonies (
    ceremony_id uuid PRIMARY KEY,
    label text NOT NULL,
    issuer_id text NOT NULL,
    key_type text NOT NULL,
    usage text NOT NULL,
    components integer NOT NULL CHECK (components BETWEEN 2 AND 3),
    conducted_by text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome text NOT NULL DEFAULT 'open' CHECK (outcome IN ('open', 'completed', 'refused')),
    reason text
);
CREATE INDEX IF NOT EXISTS ceremonies_by_label ON {schema}.ceremonies (label);

CREATE TABLE IF NOT EXISTS {schema}.ceremony_steps (
    id bigserial PRIMARY KEY,
    ceremony_id uuid NOT NULL REFERENCES {schema}.ceremonies,
    step text NOT NULL,
    custodian text,
    outcome text NOT NULL CHECK (outcome IN ('ok', 'refused')),
    detail text,
    at timestamptz NOT NULL DEFAULT now()
);

-- The PAN vault: the PAN and the rest of the record sealed under the HSM vault key
-- (AES-256-GCM, bound to card id and issuer), the PAN found again by keyed hash.
CREATE TABLE IF NOT EXISTS {schema}.vault_cards (
    card_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    pan_token text NOT NULL UNIQUE,
    pan_hash bytea NOT NULL,
    pan_blob bytea NOT NULL,
    record_blob bytea NOT NULL,
    masked_pan text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS vault_cards_by_pan_hash ON {schema}.vault_cards (pan_hash);

CREATE TABLE IF NOT EXISTS {schema}.vault_access (
    id bigserial PRIMARY KEY,
    card_id uuid NOT NULL,
    accessor text NOT NULL,
    purpose text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS vault_access_by_card ON {schema}.vault_access (card_id);

-- Data preparation: the per-card master keys stay in the HSM; only their KCVs are kept.
CREATE TABLE IF NOT EXISTS {schema}.prepared_cards (
    card_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    batch_id uuid NOT NULL,
    order_id uuid NOT NULL,
    product_id text NOT NULL,
    masked_pan text NOT NULL,
    key_scheme text NOT NULL,
    dgis text[] NOT NULL,
    mk_ac_kcv text NOT NULL,
    mk_smi_kcv text NOT NULL,
    mk_smc_kcv text NOT NULL,
    state text NOT NULL DEFAULT 'prepared' CHECK (state IN ('prepared', 'bound')),
    source_event_id uuid NOT NULL,
    prepared_at timestamptz NOT NULL DEFAULT now()
);

-- One chip per card and one card per chip, for good.
CREATE TABLE IF NOT EXISTS {schema}.chip_bindings (
    card_id uuid PRIMARY KEY REFERENCES {schema}.prepared_cards,
    chip_serial text NOT NULL UNIQUE,
    station text NOT NULL,
    bound_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {schema}.perso_sessions (
    id bigserial PRIMARY KEY,
    card_id uuid NOT NULL,
    chip_serial text NOT NULL,
    station text NOT NULL,
    apdu_count integer NOT NULL,
    kdek_kcv text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
