-- The card's trace (W3C traceparent of its card.encoded) kept with the print job, so the
-- printing done later by the spooler and its card.printed join the card's trace.
ALTER TABLE {schema}.print_jobs ADD COLUMN IF NOT EXISTS traceparent text;
