-- card.cancelled (intake): a card withdrawn before personalization is accounted for.
ALTER TABLE {schema}.cards ADD COLUMN IF NOT EXISTS cancelled_at timestamptz;
