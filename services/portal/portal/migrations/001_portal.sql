-- The portal's own schema: accounts and sessions, its audit log, and its projection of what
-- routing and intake decided. Never any identity: the person's identity is fetched live from
-- intake for the holding centre's offer page and never written here.

CREATE TABLE users (
    user_id          uuid        PRIMARY KEY,
    email            text        NOT NULL UNIQUE,   -- sign-in name, stored lower-case
    display_name     text        NOT NULL,
    role             text        NOT NULL CHECK (role IN ('centre', 'prescriber', 'operator')),
    centre_id        text,
    prescriber_id    text,
    password_hash    text,                          -- argon2id; NULL until enrolled
    totp_secret      text,                          -- base32; NULL until enrolled
    totp_last_step   bigint,                        -- the last code's time step: no replay
    enrolled_at      timestamptz,
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by       uuid,
    CHECK ((role = 'centre') = (centre_id IS NOT NULL)),
    CHECK ((role = 'prescriber') = (prescriber_id IS NOT NULL))
);

-- One-time enrolment links: only the token's SHA-256 is stored.
CREATE TABLE enrolments (
    token_sha256     text        PRIMARY KEY,
    user_id          uuid        NOT NULL REFERENCES users (user_id),
    totp_secret      text        NOT NULL,          -- offered on the page, kept once confirmed
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz
);

-- Server-side sessions: the cookie holds a random token, the table its SHA-256.
CREATE TABLE sessions (
    session_sha256   text        PRIMARY KEY,
    user_id          uuid        NOT NULL REFERENCES users (user_id),
    csrf_token       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    ended_at         timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Failed sign-ins, for throttling (per account and per client address).
CREATE TABLE sign_in_failures (
    id               bigserial   PRIMARY KEY,
    email            text        NOT NULL,
    client_address   text        NOT NULL,
    at               timestamptz NOT NULL
);
CREATE INDEX sign_in_failures_email ON sign_in_failures (email, at);
CREATE INDEX sign_in_failures_address ON sign_in_failures (client_address, at);

-- Who did what in the portal: sign-ins, identity reads, answers, reports, capacity, users.
-- Codes and ids only, never identity nor free text.
CREATE TABLE audit_log (
    id               bigserial   PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    user_id          uuid,
    email            text,       -- for sign-in attempts, including unknown accounts
    action           text        NOT NULL,
    outcome          text        NOT NULL,
    referral_id      text,
    detail           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    client_address   text
);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- The projection. One row per referral the portal heard of.
CREATE TABLE referrals (
    referral_id          text        PRIMARY KEY,
    correlation_id       uuid        NOT NULL,
    prescriber_id        text        NOT NULL,
    prescriber_kind      text        NOT NULL,
    status               text,       -- NULL until routing or intake said something
    centre_id            text,
    centre_name          text,
    site_id              text,
    answer_by            timestamptz,
    attempt              int,
    offered_services     text[]      NOT NULL DEFAULT '{}',
    judicial_frame       text,
    needed_services      text[]      NOT NULL DEFAULT '{}',
    urgency              text,
    language             text,
    interpreter_needed   boolean,
    residence_departement text,
    respond_by           date,
    -- What a user of the portal sent and routing has not answered yet ('accepted', 'declined').
    pending_action       text,
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX referrals_centre ON referrals (centre_id, status);
CREATE INDEX referrals_prescriber ON referrals (prescriber_id);

CREATE TABLE referral_history (
    event_id             uuid        PRIMARY KEY,
    referral_id          text        NOT NULL,
    occurred_at          timestamptz NOT NULL,
    kind                 text        NOT NULL,
    summary              text        NOT NULL,
    site_id              text,
    recorded_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX referral_history_referral ON referral_history (referral_id, occurred_at);

CREATE TABLE rejections (
    event_id             uuid        PRIMARY KEY,
    referral_id          text,
    prescriber_id        text,
    reason               text        NOT NULL,
    field_path           text,
    reasons              text[]      NOT NULL,
    occurred_at          timestamptz NOT NULL
);
CREATE INDEX rejections_prescriber ON rejections (prescriber_id, occurred_at DESC);

-- Places per site and service as the centres last said (seeded from the reference data, then
-- directory.updates); routing holds the places taken, the portal only what a centre confirms.
CREATE TABLE sites (
    site_id              text        PRIMARY KEY,
    centre_id            text        NOT NULL,
    centre_name          text        NOT NULL,
    departement          text        NOT NULL
);
CREATE INDEX sites_centre ON sites (centre_id);

CREATE TABLE site_services (
    site_id              text        NOT NULL REFERENCES sites (site_id),
    service              text        NOT NULL,
    places_total         int         NOT NULL,
    as_of                timestamptz NOT NULL,
    assumed              boolean     NOT NULL DEFAULT false,  -- seed value nobody confirmed
    open                 boolean     NOT NULL DEFAULT true,
    confirmed_by         text,                                -- actor id of the last change
    PRIMARY KEY (site_id, service)
);
