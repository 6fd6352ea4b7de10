-- Never lose a referral's offer, and repeat as little as possible after a crash (issue #8).

-- Identity waits: a webhook that must carry the person's identity is held while intake cannot
-- give it. Held tries are counted apart from the attempts (they never spend the retry budget);
-- the wait is bounded from its first held try.
ALTER TABLE deliveries
    ADD COLUMN identity_waits      int NOT NULL DEFAULT 0,
    ADD COLUMN identity_wait_since timestamptz,
    -- Why a fallback delivery exists: its primary died ('dead'), or it is held for the
    -- identity ('identity_wait'). NULL for planned deliveries.
    ADD COLUMN fallback_reason     text CHECK (fallback_reason IN ('dead', 'identity_wait')),
    -- The delivery worker holding the lease, so that a restarted worker can tell the attempts
    -- of a dead worker (its advisory lock is gone) from those of a live one.
    ADD COLUMN leased_by           uuid;
UPDATE deliveries SET fallback_reason = 'dead' WHERE fallback_for IS NOT NULL;

-- 'started' is committed right before a send and turned into the outcome after it: a row left
-- 'started' by a killed worker is an attempt whose outcome nobody knows, recorded as
-- 'interrupted' when it is reconciled and re-sent with the same idempotency key / Message-ID.
-- 'held': nothing sent, the identity could not be fetched.
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_outcome_check;
ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_outcome_check CHECK (
    outcome IN ('delivered', 'transient', 'permanent', 'queued', 'held', 'started', 'interrupted')
);
CREATE INDEX delivery_attempts_started ON delivery_attempts (delivery_id) WHERE outcome = 'started';
