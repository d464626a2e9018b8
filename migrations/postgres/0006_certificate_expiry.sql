-- The current version's not_after on the certificate row, kept in the transaction that sets
-- current_version_id, so `GET /certificates?expiring_within=` is an index range scan in expiry
-- order instead of a walk in id order probing every current version.
ALTER TABLE certificates ADD COLUMN current_not_after TIMESTAMPTZ;
UPDATE certificates c SET current_not_after = v.not_after
    FROM certificate_versions v WHERE v.id = c.current_version_id;
CREATE INDEX certificates_expiry ON certificates(current_not_after, id);
