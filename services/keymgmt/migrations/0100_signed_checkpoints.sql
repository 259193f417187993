-- keymgmt's own record of every audit checkpoint it signed (services/keymgmt/keys/signed_log.py).
-- Before signing, keymgmt reads the newest row of the origin and signs only a tree that does not
-- go backwards and that a consistency proof (RFC 9162 2.1.4) shows extends it. The record is
-- append-only: a row is never changed or removed by the service.
CREATE TABLE IF NOT EXISTS {schema}.signed_checkpoints (
    origin text NOT NULL,
    tree_size bigint NOT NULL CHECK (tree_size >= 0),
    root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
    note text NOT NULL,
    key_id text NOT NULL,
    signed_for text NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, tree_size)
);

CREATE OR REPLACE FUNCTION {schema}.refuse_signed_checkpoint_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'signed_checkpoints is append-only (% refused)', TG_OP;
END;
$$;

CREATE OR REPLACE TRIGGER signed_checkpoints_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.signed_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_signed_checkpoint_change();
