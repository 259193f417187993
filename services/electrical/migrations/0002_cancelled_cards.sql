-- An issuer may cancel a card before it is personalised (intake's card.cancelled). A queued
-- card leaves the queue as `cancelled`; a cancellation that arrives before the card's
-- card.prepared (another topic, so no order between them) is remembered here so the card is
-- never queued at all.
ALTER TABLE {schema}.station_cards DROP CONSTRAINT IF EXISTS station_cards_state_check;
ALTER TABLE {schema}.station_cards ADD CONSTRAINT station_cards_state_check
    CHECK (state IN ('queued', 'assigned', 'encoding', 'encoded', 'spoiled', 'cancelled'));

CREATE TABLE IF NOT EXISTS {schema}.cancelled_cards (
    card_id uuid PRIMARY KEY,
    batch_id uuid NOT NULL,
    reason text NOT NULL,
    source_event_id uuid NOT NULL,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
