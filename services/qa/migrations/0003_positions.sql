-- QA scales out (issue 17): one QA station (a process, named BUREAU_QA_STATION) runs several
-- positions (readers), and several stations may share the queue. A claim names the station and
-- the reader that holds the card, so a station restarting puts back only the cards it held,
-- never those another station is checking at that moment.
ALTER TABLE {schema}.qa_cards ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE {schema}.qa_cards ADD COLUMN IF NOT EXISTS claimed_reader text;
