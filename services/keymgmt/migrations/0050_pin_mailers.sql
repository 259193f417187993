-- PIN mailers printed by keymgmt on the PIN printer (services/keymgmt/pin_mailer.py). The PIN is
-- never stored: only the print job's state. A row is written BEFORE the job is sent, so a
-- crash or a lost printer answer is looked up on the printer by job name, never sent twice.
CREATE TABLE IF NOT EXISTS {schema}.pin_mailers (
    mailer_id uuid PRIMARY KEY,
    card_id uuid NOT NULL UNIQUE,
    batch_id uuid NOT NULL,
    issuer_id text NOT NULL,
    job_name text NOT NULL UNIQUE,
    status text NOT NULL CHECK (status IN ('queued', 'submitting', 'submitted', 'printed', 'spoiled')),
    ipp_job_id integer,
    attempts integer NOT NULL DEFAULT 0,
    last_problem text,
    requested_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
