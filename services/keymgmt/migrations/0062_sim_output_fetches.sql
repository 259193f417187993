-- Every fetch of a SIM output file: which batch, who (role:name, an operator's issuer token
-- included), when. The file holds every SIM's secrets under the operator's key; who took it
-- is on record (docs/sim.md).
CREATE TABLE IF NOT EXISTS {schema}.sim_output_fetches (
    fetch_id bigserial PRIMARY KEY,
    batch_id uuid NOT NULL,
    fetched_by text NOT NULL,
    sims integer NOT NULL,
    fetched_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sim_output_fetches_by_batch ON {schema}.sim_output_fetches (batch_id);
