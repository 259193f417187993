-- A test service's state: one row per effect, so a duplicate effect is countable.
CREATE TABLE IF NOT EXISTS {schema}.effects (
    id bigserial PRIMARY KEY,
    card_id uuid NOT NULL,
    event_id uuid NOT NULL
);
