-- A key may also reach the inventory by exchange: generated in the HSM and exported once,
-- under its owner's RSA public key (RSA-OAEP), e.g. a SIM operator's transport key
-- (services/keymgmt/sim/transport.py). Such a key is its owner's, not only the bureau's.
ALTER TABLE {schema}.keys DROP CONSTRAINT IF EXISTS keys_origin_check;
ALTER TABLE {schema}.keys ADD CONSTRAINT keys_origin_check
    CHECK (origin IN ('generated', 'ceremony', 'exchanged'));
