-- certkeep schema, PostgreSQL. Forward-only: never edit a merged migration.
-- Every *_enc column holds an age ciphertext whose plaintext binds table, column and row id.

CREATE TABLE acme_accounts (
    id               UUID PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    directory_url    TEXT NOT NULL,
    contact          TEXT NOT NULL DEFAULT '[]',          -- JSON array of mailto: URIs
    allowed_domains  TEXT NOT NULL DEFAULT '[]',          -- JSON array: exact names and *.suffix
    eab_kid          TEXT,
    eab_hmac_enc     BYTEA,
    extra_roots_pem  TEXT,                                -- extra CA certificates trusted for the directory
    credentials_enc  BYTEA,                               -- instant-acme AccountCredentials JSON
    account_url      TEXT,
    state            TEXT NOT NULL DEFAULT 'pending',     -- pending | valid | deactivated | failed
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE certificates (
    id                   UUID PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    dns_names            TEXT NOT NULL,                   -- JSON array of A-label names, as ordered
    key_type             TEXT NOT NULL,                   -- rsa2048 | rsa3072 | rsa4096 | ecdsa-p256 | ecdsa-p384
    account_id           UUID NOT NULL REFERENCES acme_accounts(id),
    renew_fraction       DOUBLE PRECISION,                -- renew when this fraction of lifetime remains
    renew_days           INTEGER,                         -- or this many days before expiry
    state                TEXT NOT NULL,                   -- pending | issuing | valid | renewing | failing | failed | revoked | retired
    current_version_id   UUID,
    renew_after          TIMESTAMPTZ,                     -- next renewal time (jittered)
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    created_by           TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX certificates_account ON certificates(account_id);
CREATE INDEX certificates_renew_after ON certificates(renew_after) WHERE state NOT IN ('retired', 'failed');

CREATE TABLE certificate_versions (
    id                UUID PRIMARY KEY,
    certificate_id    UUID NOT NULL REFERENCES certificates(id),
    order_id          UUID,
    chain_pem         TEXT NOT NULL,                      -- full chain exactly as downloaded
    key_enc           BYTEA NOT NULL,                     -- PKCS#8 DER private key
    serial            TEXT NOT NULL,                      -- lowercase hex
    thumbprint        TEXT NOT NULL,                      -- lowercase hex SHA-256 of the leaf DER
    dns_names         TEXT NOT NULL,                      -- JSON array of DNS SANs parsed from the leaf
    not_before        TIMESTAMPTZ NOT NULL,
    not_after         TIMESTAMPTZ NOT NULL,
    revoked_at        TIMESTAMPTZ,
    revocation_reason INTEGER,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX certificate_versions_cert ON certificate_versions(certificate_id, created_at);
CREATE INDEX certificate_versions_not_after ON certificate_versions(not_after);

CREATE TABLE orders (
    id               UUID PRIMARY KEY,
    certificate_id   UUID NOT NULL REFERENCES certificates(id),
    account_id       UUID NOT NULL REFERENCES acme_accounts(id),
    reason           TEXT NOT NULL,                       -- new | renewal | reissue | manual
    state            TEXT NOT NULL,                       -- queued | pending | ready | processing | valid | downloaded | done | failed
    order_url        TEXT,
    key_enc          BYTEA,                               -- PKCS#8 DER key for this order's CSR
    csr_der          BYTEA,
    replaces         TEXT,                                -- ARI certificate id, only when the CA has renewalInfo
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    deadline_at      TIMESTAMPTZ NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);
-- At most one order in flight per certificate: the database, not the scheduler, guarantees it.
CREATE UNIQUE INDEX orders_one_active ON orders(certificate_id) WHERE state NOT IN ('done', 'failed');
CREATE INDEX orders_runnable ON orders(next_attempt_at) WHERE state NOT IN ('done', 'failed');

CREATE TABLE order_events (
    id         UUID PRIMARY KEY,
    order_id   UUID NOT NULL REFERENCES orders(id),
    at         TIMESTAMPTZ NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX order_events_order ON order_events(order_id, at);

CREATE TABLE agents (
    id                     UUID PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    state                  TEXT NOT NULL,                 -- pending | active | revoked
    join_token_hash        BYTEA,
    join_token_expires_at  TIMESTAMPTZ,
    cert_serial            TEXT,                          -- serial of the current client certificate
    cert_not_after         TIMESTAMPTZ,
    ccs_password_enc       BYTEA NOT NULL,
    pfx_encryption         TEXT NOT NULL DEFAULT 'legacy',
    last_seen_at           TIMESTAMPTZ,
    os_name                TEXT,
    os_build               TEXT,
    agent_version          TEXT,
    last_report_errors     TEXT,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX agents_join_token ON agents(join_token_hash);

CREATE TABLE agent_assignments (
    agent_id       UUID NOT NULL REFERENCES agents(id),
    certificate_id UUID NOT NULL REFERENCES certificates(id),
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, certificate_id)
);
CREATE INDEX agent_assignments_cert ON agent_assignments(certificate_id);

CREATE TABLE deployments (
    agent_id       UUID NOT NULL REFERENCES agents(id),
    certificate_id UUID NOT NULL REFERENCES certificates(id),
    file_name      TEXT NOT NULL,
    thumbprint     TEXT,
    status         TEXT NOT NULL,                         -- installed | failed | kept
    error          TEXT,
    reported_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, certificate_id, file_name)
);

CREATE TABLE api_tokens (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL,
    token_hash      BYTEA NOT NULL UNIQUE,                -- SHA-256 of the 256-bit secret
    scopes          TEXT NOT NULL,                        -- JSON array
    domain_patterns TEXT NOT NULL DEFAULT '[]',           -- JSON array, for issuer tokens
    expires_at      TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ,
    created_by      TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,                        -- 1, 2, 3 ... assigned under the chain lock
    id         UUID NOT NULL UNIQUE,
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    source     TEXT,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
CREATE INDEX audit_events_subject ON audit_events(subject);

-- Singleton rows keyed by name: the internal CA and any other server-wide secret.
CREATE TABLE server_keys (
    name        TEXT PRIMARY KEY,
    id          UUID NOT NULL UNIQUE,
    cert_pem    TEXT NOT NULL,
    key_enc     BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
