-- Cards their issuer cancelled before personalisation (intake's card.cancelled): keymgmt
-- prepares none of them and gives no station a script for one (docs/services.md).
CREATE TABLE IF NOT EXISTS {schema}.cancelled_cards (
    card_id uuid PRIMARY KEY,
    reason text NOT NULL,
    source_event_id uuid NOT NULL,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
