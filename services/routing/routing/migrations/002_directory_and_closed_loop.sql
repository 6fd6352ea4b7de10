-- The directory (seeded by `aiguillage-routing-directory load`, then changed by events), the
-- referrals routing follows through the closed loop, the places they hold, and the waiting lists.

CREATE TABLE centres (
    centre_id           text PRIMARY KEY,
    name                text NOT NULL,
    region_code         text NOT NULL,
    departements        text[] NOT NULL,
    coordinator_contact text NOT NULL DEFAULT '',
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE sites (
    site_id              text PRIMARY KEY,
    centre_id            text NOT NULL REFERENCES centres,
    commune_insee        text NOT NULL,
    departement          text NOT NULL,
    lat                  double precision NOT NULL,
    lon                  double precision NOT NULL,
    serves               text[] NOT NULL,
    address_confidential boolean NOT NULL DEFAULT false,
    assumed              boolean NOT NULL DEFAULT false,
    languages            text[] NOT NULL DEFAULT '{fr}',
    closed_at            timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX sites_serves ON sites USING gin (serves);

-- places_held is Aiguillage's own count (offers and placements not yet released); the guard on
-- reservation (places_held < places_total) is what keeps a site from being overfilled.
CREATE TABLE site_services (
    site_id      text NOT NULL REFERENCES sites,
    service      text NOT NULL,
    is_open      boolean NOT NULL DEFAULT true,
    places_total integer NOT NULL CHECK (places_total >= 0),
    places_held  integer NOT NULL DEFAULT 0 CHECK (places_held >= 0),
    places_open  integer GENERATED ALWAYS AS (GREATEST(places_total - places_held, 0)) STORED,
    eligibility  text NOT NULL CHECK (eligibility IN ('judicial_only', 'all')),
    assumed      boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (site_id, service)
);

CREATE TABLE referrals (
    referral_id    text PRIMARY KEY,
    correlation_id uuid NOT NULL,
    accepted       jsonb NOT NULL,
    status         text NOT NULL CHECK (status IN (
        'offered', 'placed', 'waitlisted', 'unroutable', 'escalated', 'withdrawn', 'closed')),
    site_id        text,
    attempt        integer NOT NULL DEFAULT 0,
    tried          text[] NOT NULL DEFAULT '{}',
    urgency_rank   integer NOT NULL,
    arrived_at     timestamptz NOT NULL,
    answer_by      timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The offer-timeout worker looks only at open offers, earliest deadline first.
CREATE INDEX referrals_due_offers ON referrals (answer_by) WHERE status = 'offered';

CREATE TABLE holds (
    referral_id text NOT NULL REFERENCES referrals,
    site_id     text NOT NULL,
    service     text NOT NULL,
    held_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (referral_id, service),
    FOREIGN KEY (site_id, service) REFERENCES site_services
);

CREATE TABLE waitlist (
    referral_id  text PRIMARY KEY REFERENCES referrals,
    site_id      text NOT NULL,
    service      text NOT NULL,
    -- Freed places are offered to everyone waiting for the service within the site's reach.
    residence_departement text NOT NULL,
    urgency_rank integer NOT NULL,
    arrived_at   timestamptz NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX waitlist_order ON waitlist (site_id, service, urgency_rank, arrived_at, seq);
CREATE INDEX waitlist_reach ON waitlist (service, residence_departement);

-- A referral now has one decision per attempt; each keeps its full record.
ALTER TABLE decisions DROP CONSTRAINT decisions_pkey;
ALTER TABLE decisions ADD PRIMARY KEY (decision_id);
ALTER TABLE decisions DROP CONSTRAINT decisions_outcome_check;
ALTER TABLE decisions ADD CONSTRAINT decisions_outcome_check
    CHECK (outcome IN ('routed', 'unroutable', 'waitlisted', 'escalated'));
ALTER TABLE decisions ADD COLUMN attempt integer NOT NULL DEFAULT 1;
ALTER TABLE decisions ADD COLUMN policy_version text;
ALTER TABLE decisions ADD COLUMN record jsonb;
CREATE INDEX decisions_referral ON decisions (referral_id, decided_at);
