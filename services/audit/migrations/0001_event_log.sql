-- The append-only event log (ARCHITECTURE.md: audit keeps an append-only, tamper-evident log).
-- Every decoded event is stored once (the inbox guarantees it). Each entry is chained to the one
-- before it: leaf_hash = SHA-256(0x00 || canonical JSON) as an RFC 6962 leaf, and
-- entry_hash = SHA-256(prev_hash || leaf_hash). log_index is dense and 0-based (seq may have
-- gaps after rolled-back transactions) so that a Merkle tree over leaf_hash can be built later.
CREATE TABLE IF NOT EXISTS {schema}.events (
    seq bigserial PRIMARY KEY,
    log_index bigint NOT NULL UNIQUE CHECK (log_index >= 0),
    event_id uuid NOT NULL UNIQUE,
    type text NOT NULL,
    version integer NOT NULL,
    issuer_id text NOT NULL,
    actor text NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    card_id uuid,
    batch_id uuid,
    order_id uuid,
    payload jsonb NOT NULL,
    leaf_hash text NOT NULL CHECK (leaf_hash ~ '^[0-9a-f]{64}$'),
    prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    entry_hash text NOT NULL UNIQUE CHECK (entry_hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX IF NOT EXISTS events_card ON {schema}.events (card_id, seq) WHERE card_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_batch ON {schema}.events (batch_id, seq) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_issuer ON {schema}.events (issuer_id, seq);
CREATE INDEX IF NOT EXISTS events_type ON {schema}.events (type, seq);
-- shipment.dispatched names its cards in a list: found by card id through this index.
CREATE INDEX IF NOT EXISTS events_card_lists ON {schema}.events USING gin ((payload -> 'card_ids'));

-- The head of the chain: one row, locked by every append so the chain has one order.
CREATE TABLE IF NOT EXISTS {schema}.chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    size bigint NOT NULL,
    entry_hash text NOT NULL
);
INSERT INTO {schema}.chain_head (singleton, size, entry_hash)
VALUES (true, 0, repeat('0', 64))
ON CONFLICT (singleton) DO NOTHING;

-- Refuse every change but INSERT. Statement-level, so even an UPDATE or DELETE that matches no
-- row is refused, and TRUNCATE (which fires no row trigger) too.
CREATE OR REPLACE FUNCTION {schema}.refuse_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit event log is append-only (% refused on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE OR REPLACE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();

-- Projections, updated in the same transaction as the log entry.
CREATE TABLE IF NOT EXISTS {schema}.batches (
    batch_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    order_id uuid,
    product_id text,
    card_count integer,
    stock_issued integer NOT NULL DEFAULT 0,
    stock_returned integer NOT NULL DEFAULT 0,
    -- Counters that gate the full evaluation, so a batch is not re-read on every event.
    cards_known integer NOT NULL DEFAULT 0,
    cards_ended integer NOT NULL DEFAULT 0,
    cards_settled integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'held', 'reconciled', 'closed')),
    counts jsonb,
    reconciled_at timestamptz,
    closed_at timestamptz,
    discrepancy jsonb,
    discrepancy_digest text,
    discrepancy_at timestamptz,
    first_event_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_event_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- When a discrepancy report last looked at the batch (request or sweep): the sweep skips
    -- batches with no event since.
    checked_at timestamptz
);
CREATE INDEX IF NOT EXISTS batches_sweep ON {schema}.batches (last_event_at)
    WHERE status <> 'closed';

CREATE TABLE IF NOT EXISTS {schema}.cards (
    card_id uuid PRIMARY KEY,
    batch_id uuid NOT NULL,
    issuer_id text NOT NULL,
    order_id uuid,
    ordered_at timestamptz,
    prepared_at timestamptz,
    encoded_at timestamptz,
    chip_serial text,
    spoiled_at timestamptz,
    spoiled_stage text,
    spoiled_reason text,
    printed_at timestamptz,
    qa_passed_at timestamptz,
    qa_failed_at timestamptz,
    qa_failed_reason text,
    packed_at timestamptz,
    dispatched_at timestamptz,
    shipment_id uuid,
    destroyed_at timestamptz,
    destroyed_reason text
);
CREATE INDEX IF NOT EXISTS cards_batch ON {schema}.cards (batch_id);
