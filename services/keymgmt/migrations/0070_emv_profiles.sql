-- A product's EMV data elements (docs/emv-profile.md): application label, country, currency,
-- AUC, IACs, CVM list, DOLs, offline limits, contactless, ODA methods. NULL: the defaults.
ALTER TABLE {schema}.card_products ADD COLUMN IF NOT EXISTS emv jsonb;
