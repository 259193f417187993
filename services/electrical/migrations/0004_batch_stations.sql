-- Station planning (issue 15, docs/keymgmt.md "Station planning"): keymgmt assigns each batch,
-- off the floor, to the encoding stations that may personalise it and announces it
-- (batch.assigned, the newest `revision` kept); a station claims only cards of batches assigned
-- to its own station id. NULL stations: no assignment heard yet, the cards stay queued. keymgmt
-- refuses the script to any other station whatever this table says.
ALTER TABLE {schema}.batches ADD COLUMN IF NOT EXISTS stations text[];
ALTER TABLE {schema}.batches ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 0;
-- A batch that reached the station before station planning keeps the rule it came under: any
-- station (keymgmt's migration 0115 does the same on its side) until it is assigned.
ALTER TABLE {schema}.batches ADD COLUMN IF NOT EXISTS any_station boolean NOT NULL DEFAULT false;
UPDATE {schema}.batches SET any_station = true WHERE revision = 0 AND stations IS NULL;
