-- One row per printed card waiting for (or done with) QA. States: queued -> checking ->
-- passed | failed. A `checking` card goes back to `queued` when the QA machine (feeder,
-- reader, keymgmt) fails rather than the card; checks read the chip and never write it.
CREATE TABLE IF NOT EXISTS {schema}.qa_cards (
    card_id uuid PRIMARY KEY,
    batch_id uuid NOT NULL,
    issuer_id text NOT NULL,
    chip_serial text NOT NULL,
    image_sha256 text NOT NULL,
    seq bigserial NOT NULL UNIQUE,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'checking', 'passed', 'failed')),
    checks text[] NOT NULL DEFAULT '{}',
    reason text,
    attempts integer NOT NULL DEFAULT 0,
    source_event_id uuid NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK (state <> 'failed' OR reason IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS qa_cards_claim ON {schema}.qa_cards (seq) WHERE state = 'queued';
