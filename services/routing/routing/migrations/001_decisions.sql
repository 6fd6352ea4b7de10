-- One routing decision per referral, with what a coordinator needs to understand it.
CREATE TABLE decisions (
    referral_id        text        PRIMARY KEY,
    decision_id        uuid        NOT NULL UNIQUE,
    outcome            text        NOT NULL CHECK (outcome IN ('routed', 'unroutable')),
    site_id            text,
    centre_id          text,
    distance_km        double precision,
    reason             text,
    explanation        text        NOT NULL,
    caused_by_event_id uuid        NOT NULL,
    correlation_id     uuid        NOT NULL,
    decided_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX decisions_site ON decisions (site_id);
