-- Station planning (issue 15, docs/keymgmt.md "Station planning"): the encoding stations each
-- batch is assigned to. Only these stations get the script of a card of the batch that no
-- station has bound yet (a bound card stays with its station). A batch with no row waits for a
-- planner. `revision` grows with each assignment and travels in batch.assigned.
CREATE TABLE IF NOT EXISTS {schema}.perso_batches (
    batch_id uuid PRIMARY KEY,
    issuer_id text NOT NULL,
    stations text[] NOT NULL DEFAULT '{}',
    -- A batch prepared before station planning existed: any station, the first binding holds
    -- (the rule it was prepared under). A planner's assignment ends it.
    any_station boolean NOT NULL DEFAULT false,
    revision integer NOT NULL CHECK (revision >= 0),
    assigned_by text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now()
);

-- The rule for batches prepared before this migration: they keep the old rule (any station,
-- the first to bind a card keeps it) until a planner assigns them. Revision 0: never announced.
INSERT INTO {schema}.perso_batches (batch_id, issuer_id, any_station, revision, assigned_by)
SELECT DISTINCT ON (batch_id) batch_id, issuer_id, true, 0, 'migration:0115'
FROM {schema}.prepared_cards
ORDER BY batch_id
ON CONFLICT (batch_id) DO NOTHING;
