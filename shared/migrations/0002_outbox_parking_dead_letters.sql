-- An outbox row the broker refuses is retried, then parked so the rows behind it go on
-- (shared/outbox.py): its attempts, the last refusal, and when it was parked.
ALTER TABLE {schema}.outbox ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.outbox ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE {schema}.outbox ADD COLUMN IF NOT EXISTS parked_at timestamptz;
CREATE INDEX IF NOT EXISTS outbox_parked ON {schema}.outbox (id) WHERE parked_at IS NOT NULL;

-- A dead-lettered record too large for the broker: its bytes stay here and the DLQ record
-- references them by id and SHA-256 (shared/bus.py, dead-lettering).
CREATE TABLE IF NOT EXISTS {schema}.dead_letter_bodies (
    id uuid PRIMARY KEY,
    source text NOT NULL,
    key bytea,
    value bytea,
    headers jsonb NOT NULL DEFAULT '[]'::jsonb,
    sha256 text NOT NULL,
    size bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
