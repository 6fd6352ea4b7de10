-- Prescriber registry entries received by event; they override the registry file per prescriber.
CREATE TABLE prescribers (
    prescriber_id  text        PRIMARY KEY,
    signing_key_id text        NOT NULL,
    entry          jsonb       NOT NULL,
    updated_at     timestamptz NOT NULL,  -- occurred_at of the event; the newest wins
    event_id       uuid        NOT NULL
);
CREATE INDEX prescribers_by_key ON prescribers (signing_key_id);

-- Lifecycle: a referral is open until cancelled; closed_at starts the retention period.
ALTER TABLE referrals
    ADD COLUMN status               text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'cancelled')),
    ADD COLUMN closed_at            timestamptz,
    ADD COLUMN outside_jurisdiction boolean     NOT NULL DEFAULT false,
    ADD COLUMN purged_at            timestamptz;
CREATE INDEX referrals_closed ON referrals (closed_at) WHERE purged_at IS NULL;
