-- Makes every session rebuild its map of a bucket's segments. A session
-- that rebuilds that map while another session attaches or drops a
-- segment can take in the notice of the change before the rebuild ends
-- and keep the map of before: its inserts into a new segment find no
-- partition although the catalogue has it, and its reads through
-- `records` skip that segment, in every later transaction, until the
-- bucket changes again. A change to the bucket's catalogue entry that
-- alters nothing (a column's statistics target set to the default every
-- column of `records` has) is such a change: it takes a lock that does
-- not block inserts and invalidates every session's map. The broker
-- follows each change it makes to a bucket with this, and calls it when
-- an insert meets such a map.
-- Runs with search_path set to pgbroker's own schema.
CREATE FUNCTION _pb_refresh_bucket(p_partition bigint) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$
BEGIN
    EXECUTE format('ALTER TABLE ONLY %I ALTER COLUMN ts SET STATISTICS -1', _pb_record_bucket(p_partition));
END
$f$;
