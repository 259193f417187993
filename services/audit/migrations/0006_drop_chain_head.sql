-- Appends chain to the last entry under an advisory lock (append_entry, 0005); the head row of
-- 0001 is no longer kept, so it goes rather than show a stale size.
DROP TABLE IF EXISTS {schema}.chain_head;
