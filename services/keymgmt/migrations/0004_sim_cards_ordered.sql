-- SIMs ordered card by card (card.ordered of a SIM product): the card each SIM belongs to,
-- and the last SQN keymgmt used to challenge it at QA (TS 33.102: each AUTN a fresh SQN).
ALTER TABLE {schema}.sim_cards ADD COLUMN IF NOT EXISTS card_id uuid UNIQUE;
ALTER TABLE {schema}.sim_cards ADD COLUMN IF NOT EXISTS qa_sqn bigint NOT NULL DEFAULT 0;
-- A prepared SIM has no EMV master keys: its prepared_cards row carries no MK KCVs.
ALTER TABLE {schema}.prepared_cards ALTER COLUMN mk_ac_kcv DROP NOT NULL;
ALTER TABLE {schema}.prepared_cards ALTER COLUMN mk_smi_kcv DROP NOT NULL;
ALTER TABLE {schema}.prepared_cards ALTER COLUMN mk_smc_kcv DROP NOT NULL;
