-- The second holder of a split referral (docs/routing.md: care locally, housing by the national
-- platform): the national housing platform may receive the identity for the housing only, from
-- its housing offer (referral.housing_offered) until the housing leg ends
-- (referral.housing_updated declined, timed_out or released). The care holder stays in
-- identity_holders. Never holds identity.
CREATE TABLE identity_housing_holders (
    referral_id text        PRIMARY KEY,
    centre_id   text,                     -- NULL: the housing leg ended
    state       text        CHECK (state IN ('offered', 'placed')),
    event_id    uuid        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
