-- Aborts the statement that calls it. A settlement that must change all
-- of its messages or none deletes them first and calls this when it
-- changed fewer than it was given: the statement, and with it every
-- change, is undone, and the caller takes the careful path that locks
-- each message before touching it.
CREATE FUNCTION settle_refused() RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'pgbroker: a receipt is stale or needs the transactional path'
        USING ERRCODE = 'PB001';
END
$$;
