-- The card's trace (W3C traceparent of its card.prepared) kept with the queued card, so the
-- encoding done later by a reader, its keymgmt calls and its card.encoded join the card's trace.
ALTER TABLE {schema}.station_cards ADD COLUMN IF NOT EXISTS traceparent text;
