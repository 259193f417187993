-- The card's trace (W3C traceparent of its card.printed) kept with the queued card, so the
-- checks done later, their keymgmt calls and card.qa_passed / card.qa_failed join the card's
-- trace.
ALTER TABLE {schema}.qa_cards ADD COLUMN IF NOT EXISTS traceparent text;
