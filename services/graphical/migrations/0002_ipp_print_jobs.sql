-- Print jobs go to a real IPP printer. A job is recorded (with the rendered document) BEFORE it
-- is submitted; `submitting` means "maybe sent": the next attempt first asks the printer for a
-- job of that name, so a crash or a lost answer never prints a card twice.
--   queued -> submitting -> submitted -> printed | spoiled
ALTER TABLE {schema}.print_jobs DROP CONSTRAINT IF EXISTS print_jobs_status_check;
ALTER TABLE {schema}.print_jobs ADD CONSTRAINT print_jobs_status_check
    CHECK (status IN ('queued', 'submitting', 'submitted', 'printed', 'spoiled'));
ALTER TABLE {schema}.print_jobs
    ADD COLUMN IF NOT EXISTS job_name text,
    ADD COLUMN IF NOT EXISTS document bytea,
    ADD COLUMN IF NOT EXISTS ipp_job_id integer,
    ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS rejections integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_problem text,
    ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS lease_until timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS print_jobs_job_name ON {schema}.print_jobs (job_name);
CREATE INDEX IF NOT EXISTS print_jobs_due ON {schema}.print_jobs (next_attempt_at)
    WHERE status IN ('queued', 'submitting', 'submitted');
