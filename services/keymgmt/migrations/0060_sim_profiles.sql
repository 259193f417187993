-- SIM profiles and per-card credentials (docs/sim.md).
-- The operator's SIM profile of a product (SPN, display condition, HPLMN search period,
-- FPLMN, ACC rule, MNC length, OTA, PIN1 enabled, extra files), validated by the API.
ALTER TABLE {schema}.sim_products ADD COLUMN IF NOT EXISTS profile jsonb NOT NULL DEFAULT '{}';
-- Per card: PIN1, PUK1, PIN2, PUK2, ADM1 (one 48-byte block made from the HSM's random) and,
-- when the profile asks for OTA, KIc, KID and KIK (AES-128 keys generated in the HSM); each
-- only ever wrapped (RFC 3394), under the bureau SIM storage key and the operator's
-- transport key, like Ki and OPc.
ALTER TABLE {schema}.sim_cards ADD COLUMN IF NOT EXISTS pins_stored bytea;
ALTER TABLE {schema}.sim_cards ADD COLUMN IF NOT EXISTS pins_transport bytea;
ALTER TABLE {schema}.sim_cards ADD COLUMN IF NOT EXISTS ota_stored bytea;
ALTER TABLE {schema}.sim_cards ADD COLUMN IF NOT EXISTS ota_transport bytea;
-- Which profile a batch's SIMs were made with (the output file's header names it).
ALTER TABLE {schema}.sim_batches ADD COLUMN IF NOT EXISTS profile jsonb NOT NULL DEFAULT '{}';
