-- certkeep schema, SQLite. Forward-only: never edit a merged migration.
-- Every *_enc column holds an age ciphertext whose plaintext binds table, column and row id.

CREATE TABLE acme_accounts (
    id               BLOB PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    directory_url    TEXT NOT NULL,
    contact          TEXT NOT NULL DEFAULT '[]',          -- JSON array of mailto: URIs
    allowed_domains  TEXT NOT NULL DEFAULT '[]',          -- JSON array: exact names and *.suffix
    eab_kid          TEXT,
    eab_hmac_enc     BLOB,
    extra_roots_pem  TEXT,                                -- extra CA certificates trusted for the directory
    credentials_enc  BLOB,                               -- instant-acme AccountCredentials JSON
    account_url      TEXT,
    state            TEXT NOT NULL DEFAULT 'pending',     -- pending | valid | deactivated | failed
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE certificates (
    id                   BLOB PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    dns_names            TEXT NOT NULL,                   -- JSON array of A-label names, as ordered
    key_type             TEXT NOT NULL,                   -- rsa2048 | rsa3072 | rsa4096 | ecdsa-p256 | ecdsa-p384
    account_id           BLOB NOT NULL REFERENCES acme_accounts(id),
    renew_fraction       REAL,                -- renew when this fraction of lifetime remains
    renew_days           INTEGER,                         -- or this many days before expiry
    state                TEXT NOT NULL,                   -- pending | issuing | valid | renewing | failing | failed | revoked | retired
    current_version_id   BLOB,
    renew_after          TEXT,                     -- next renewal time (jittered)
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    created_by           TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX certificates_account ON certificates(account_id);
CREATE INDEX certificates_renew_after ON certificates(renew_after) WHERE state NOT IN ('retired', 'failed');

CREATE TABLE certificate_versions (
    id                BLOB PRIMARY KEY,
    certificate_id    BLOB NOT NULL REFERENCES certificates(id),
    order_id          BLOB,
    chain_pem         TEXT NOT NULL,                      -- full chain exactly as downloaded
    key_enc           BLOB NOT NULL,                     -- PKCS#8 DER private key
    serial            TEXT NOT NULL,                      -- lowercase hex
    thumbprint        TEXT NOT NULL,                      -- lowercase hex SHA-256 of the leaf DER
    dns_names         TEXT NOT NULL,                      -- JSON array of DNS SANs parsed from the leaf
    not_before        TEXT NOT NULL,
    not_after         TEXT NOT NULL,
    revoked_at        TEXT,
    revocation_reason INTEGER,
    created_at        TEXT NOT NULL
);
CREATE INDEX certificate_versions_cert ON certificate_versions(certificate_id, created_at);
CREATE INDEX certificate_versions_not_after ON certificate_versions(not_after);

CREATE TABLE orders (
    id               BLOB PRIMARY KEY,
    certificate_id   BLOB NOT NULL REFERENCES certificates(id),
    account_id       BLOB NOT NULL REFERENCES acme_accounts(id),
    reason           TEXT NOT NULL,                       -- new | renewal | reissue | manual
    state            TEXT NOT NULL,                       -- queued | pending | ready | processing | valid | downloaded | done | failed
    order_url        TEXT,
    key_enc          BLOB,                               -- PKCS#8 DER key for this order's CSR
    csr_der          BLOB,
    replaces         TEXT,                                -- ARI certificate id, only when the CA has renewalInfo
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    deadline_at      TEXT NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    finished_at      TEXT
);
-- At most one order in flight per certificate: the database, not the scheduler, guarantees it.
CREATE UNIQUE INDEX orders_one_active ON orders(certificate_id) WHERE state NOT IN ('done', 'failed');
CREATE INDEX orders_runnable ON orders(next_attempt_at) WHERE state NOT IN ('done', 'failed');

CREATE TABLE order_events (
    id         BLOB PRIMARY KEY,
    order_id   BLOB NOT NULL REFERENCES orders(id),
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX order_events_order ON order_events(order_id, at);

CREATE TABLE agents (
    id                     BLOB PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    state                  TEXT NOT NULL,                 -- pending | active | revoked
    join_token_hash        BLOB,
    join_token_expires_at  TEXT,
    cert_serial            TEXT,                          -- serial of the current client certificate
    cert_not_after         TEXT,
    ccs_password_enc       BLOB NOT NULL,
    pfx_encryption         TEXT NOT NULL DEFAULT 'legacy',
    last_seen_at           TEXT,
    os_name                TEXT,
    os_build               TEXT,
    agent_version          TEXT,
    last_report_errors     TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE UNIQUE INDEX agents_join_token ON agents(join_token_hash);

CREATE TABLE agent_assignments (
    agent_id       BLOB NOT NULL REFERENCES agents(id),
    certificate_id BLOB NOT NULL REFERENCES certificates(id),
    created_at     TEXT NOT NULL,
    PRIMARY KEY (agent_id, certificate_id)
);
CREATE INDEX agent_assignments_cert ON agent_assignments(certificate_id);

CREATE TABLE deployments (
    agent_id       BLOB NOT NULL REFERENCES agents(id),
    certificate_id BLOB NOT NULL REFERENCES certificates(id),
    file_name      TEXT NOT NULL,
    thumbprint     TEXT,
    status         TEXT NOT NULL,                         -- installed | failed | kept
    error          TEXT,
    reported_at    TEXT NOT NULL,
    PRIMARY KEY (agent_id, certificate_id, file_name)
);

CREATE TABLE api_tokens (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    token_hash      BLOB NOT NULL UNIQUE,                -- SHA-256 of the 256-bit secret
    scopes          TEXT NOT NULL,                        -- JSON array
    domain_patterns TEXT NOT NULL DEFAULT '[]',           -- JSON array, for issuer tokens
    expires_at      TEXT,
    revoked_at      TEXT,
    last_used_at    TEXT,
    created_by      TEXT,
    created_at      TEXT NOT NULL
);

CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY,                        -- 1, 2, 3 ... assigned under the chain lock
    id         BLOB NOT NULL UNIQUE,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    source     TEXT,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_events_subject ON audit_events(subject);

-- Singleton rows keyed by name: the internal CA and any other server-wide secret.
CREATE TABLE server_keys (
    name        TEXT PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,
    cert_pem    TEXT NOT NULL,
    key_enc     BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
