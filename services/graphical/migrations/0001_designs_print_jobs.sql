-- Issuer card designs (services/graphical/service.py CardDesign, as JSON).
CREATE TABLE IF NOT EXISTS {schema}.designs (
    issuer_id text PRIMARY KEY,
    design jsonb NOT NULL,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One print job per card, ever: a second card.encoded for the same card prints nothing.
CREATE TABLE IF NOT EXISTS {schema}.print_jobs (
    job_id uuid PRIMARY KEY,
    card_id uuid NOT NULL UNIQUE,
    batch_id uuid NOT NULL,
    issuer_id text NOT NULL,
    chip_serial text NOT NULL,
    printer text NOT NULL,
    design_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('printed', 'spoiled')),
    image_sha256 text,
    location text,
    reason text,
    source_event_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'printed' OR (image_sha256 IS NOT NULL AND location IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS print_jobs_batch ON {schema}.print_jobs (batch_id);
