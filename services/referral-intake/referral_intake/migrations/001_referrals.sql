-- Referrals as intake admitted them. Routing attributes in clear; identity only sealed.
CREATE TABLE referrals (
    referral_id        text        PRIMARY KEY,
    fingerprint        text        NOT NULL,
    prescriber_id      text        NOT NULL,
    correlation_id     uuid        NOT NULL,
    submitted_event_id uuid        NOT NULL,
    accepted           jsonb       NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per person's identity; deleting wrapped_key (purge) makes ciphertext unreadable.
CREATE TABLE identities (
    referral_id   text  PRIMARY KEY REFERENCES referrals (referral_id),
    ciphertext    bytea NOT NULL,
    wrapped_key   bytea,
    master_key_id text  NOT NULL
);
