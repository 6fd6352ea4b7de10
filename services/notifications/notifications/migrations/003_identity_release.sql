-- What intake answered when a webhook asked for the person's identity: 'granted', or why not
-- ('not_holder', 'unknown', 'gone', 'unavailable', ...). The identity itself is never stored here.
ALTER TABLE delivery_attempts ADD COLUMN identity_release text;
