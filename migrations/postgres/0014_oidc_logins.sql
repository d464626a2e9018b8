-- Pending OIDC logins: one row from the redirect to the IdP until its callback (single use,
-- short expiry), so any server process sharing the database can complete it. The state is
-- stored only as its SHA-256; the PKCE verifier sealed (age, bound to the row).
CREATE TABLE oidc_logins (
    id                 UUID PRIMARY KEY,
    state_hash         BYTEA NOT NULL UNIQUE,
    nonce              TEXT NOT NULL,
    pkce_verifier_enc  BYTEA NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX oidc_logins_expires_at ON oidc_logins (expires_at);
