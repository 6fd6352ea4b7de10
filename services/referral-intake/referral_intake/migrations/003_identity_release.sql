-- Which centre may receive a referral's identity: the one holding an offer or a place, as
-- routing last said on referrals.routed. No foreign key: routing may speak of a referral before
-- this row matters, and the row never holds identity.
CREATE TABLE identity_holders (
    referral_id text        PRIMARY KEY,
    centre_id   text,                     -- NULL: no centre may receive the identity
    state       text        CHECK (state IN ('offered', 'placed')),
    event_id    uuid        NOT NULL,     -- the routing event that set this row
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every identity release asked of intake, granted or refused: who asked for what, and the answer.
-- Never the identity itself.
CREATE TABLE identity_releases (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    referral_id  text        NOT NULL,
    centre_id    text        NOT NULL,
    outcome      text        NOT NULL
        CHECK (outcome IN ('granted', 'not_holder', 'unknown', 'gone', 'not_yet_known')),
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX identity_releases_referral ON identity_releases (referral_id);
