-- QA read-backs per card (issue 16: the read-back must not be a PAN oracle). The first read-back
-- pins the card's QA to the station that asked; every read-back is counted before it is
-- answered, and a card gets a bounded number. No cardholder data: ids, a station, a count.
CREATE TABLE IF NOT EXISTS {schema}.qa_readbacks (
    card_id uuid PRIMARY KEY,
    qa_station text NOT NULL,
    readbacks integer NOT NULL CHECK (readbacks >= 1),
    first_at timestamptz NOT NULL DEFAULT now(),
    last_at timestamptz NOT NULL DEFAULT now()
);
