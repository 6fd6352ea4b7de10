-- An attempt row is inserted 'started' and updated to its outcome a few milliseconds later, once
-- per delivery. The partial index on 'started' rows made that update touch every index of the
-- table (its predicate names the outcome, so PostgreSQL could not update the row in place): the
-- delivery worker's rounds wrote 16 WAL records per delivery. Every query on 'started' rows
-- also names the delivery, which delivery_attempts_delivery finds. Without the partial index,
-- and with room left in each page for the outcome, the update is a heap-only (HOT) update.
DROP INDEX IF EXISTS delivery_attempts_started;
ALTER TABLE delivery_attempts SET (fillfactor = 80);
