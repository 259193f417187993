-- Lookups by card id must not scan a GIN pending list that grows between vacuums of an
-- insert-only table (measured by bench/audit): new entries go straight into the index.
ALTER INDEX {schema}.events_card_lists SET (fastupdate = off);
