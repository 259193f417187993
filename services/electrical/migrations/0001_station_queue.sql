-- Batches in the order they first reached this station: the oldest batch is encoded first.
CREATE TABLE IF NOT EXISTS {schema}.batches (
    batch_id uuid PRIMARY KEY,
    seq bigserial NOT NULL UNIQUE,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

-- One row per prepared card. States: queued -> assigned (claimed by a reader, chip bound, no
-- personalisation APDU sent yet) -> encoding (APDUs being sent) -> encoded | spoiled.
-- An `assigned` card can go back to `queued` (its chip was never written); an `encoding` card
-- never can: a crash there spoils it, so no chip and no card is ever encoded twice.
CREATE TABLE IF NOT EXISTS {schema}.station_cards (
    card_id uuid PRIMARY KEY,
    batch_id uuid NOT NULL,
    batch_seq bigint NOT NULL,
    seq bigserial NOT NULL UNIQUE,
    issuer_id text NOT NULL,
    product_id text NOT NULL,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'assigned', 'encoding', 'encoded', 'spoiled')),
    chip_serial text,
    station_id text,
    reader text,
    apdu_count integer,
    reason text,
    source_event_id uuid NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    assigned_at timestamptz,
    finished_at timestamptz,
    CHECK (state = 'queued' OR chip_serial IS NOT NULL OR reason IS NOT NULL)
);
-- The claim: oldest batch first, then arrival order, over queued cards only.
CREATE INDEX IF NOT EXISTS station_cards_claim
    ON {schema}.station_cards (batch_seq, seq) WHERE state = 'queued';
-- A chip is bound to at most one card, ever.
CREATE UNIQUE INDEX IF NOT EXISTS station_cards_chip
    ON {schema}.station_cards (chip_serial) WHERE chip_serial IS NOT NULL;
CREATE INDEX IF NOT EXISTS station_cards_unfinished
    ON {schema}.station_cards (station_id) WHERE state IN ('assigned', 'encoding');
