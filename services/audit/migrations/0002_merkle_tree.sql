-- The Merkle tree over events.leaf_hash (RFC 9162 section 2.1) and its signed checkpoints.
-- tree_nodes holds the perfect, aligned subtrees above the leaves: node (level, idx) covers
-- log indexes [idx * 2^level, (idx + 1) * 2^level); the leaves are events.leaf_hash.
CREATE TABLE IF NOT EXISTS {schema}.tree_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 62),
    idx bigint NOT NULL CHECK (idx >= 0),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- How many leaves the tree covers: one row, locked by the builder so the tree has one writer.
CREATE TABLE IF NOT EXISTS {schema}.tree_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    size bigint NOT NULL CHECK (size >= 0)
);
INSERT INTO {schema}.tree_head (singleton, size) VALUES (true, 0)
ON CONFLICT (singleton) DO NOTHING;

-- Signed checkpoints: `note` is the exact text whose SHA-256 the HSM key signed.
CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    tree_size bigint PRIMARY KEY CHECK (tree_size >= 0),
    root_hash text NOT NULL CHECK (root_hash ~ '^[0-9a-f]{64}$'),
    signed_at timestamptz NOT NULL,
    origin text NOT NULL,
    note text NOT NULL,
    key_id text NOT NULL,
    algorithm text NOT NULL,
    signature text NOT NULL,
    event_id uuid NOT NULL UNIQUE
);

CREATE OR REPLACE TRIGGER tree_nodes_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.tree_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();
CREATE OR REPLACE TRIGGER checkpoints_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();
