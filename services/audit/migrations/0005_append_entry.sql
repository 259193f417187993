-- One round trip per append: lock the log (transaction-scoped advisory lock, so appends have
-- one order), read the last entry, insert the next one chained to it. A VOLATILE function
-- takes a fresh snapshot per statement, so after the lock it sees the previous holder's
-- entries. The chain step is SHA-256(prev_hash || leaf_hash), as services/audit/chain.py.
CREATE OR REPLACE FUNCTION {schema}.append_entry(
    p_lock bigint, p_event_id uuid, p_type text, p_version integer, p_issuer text,
    p_actor text, p_occurred timestamptz, p_card uuid, p_batch uuid, p_order uuid,
    p_payload jsonb, p_leaf text
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    last_index bigint;
    last_hash text;
    new_seq bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT log_index, entry_hash INTO last_index, last_hash
        FROM {schema}.events ORDER BY log_index DESC LIMIT 1;
    IF NOT FOUND THEN
        last_index := -1;
        last_hash := repeat('0', 64);
    END IF;
    INSERT INTO {schema}.events (log_index, event_id, type, version, issuer_id, actor,
        occurred_at, card_id, batch_id, order_id, payload, leaf_hash, prev_hash, entry_hash)
    VALUES (last_index + 1, p_event_id, p_type, p_version, p_issuer, p_actor, p_occurred,
        p_card, p_batch, p_order, p_payload, p_leaf, last_hash,
        encode(sha256(decode(last_hash, 'hex') || decode(p_leaf, 'hex')), 'hex'))
    RETURNING seq INTO new_seq;
    RETURN new_seq;
END;
$$;
