-- Domain-validation ledger: per ACME account and name, when the CA last showed a valid
-- authorization and when that validation lapses (the authorization's `expires`).
-- lapse_noted_at: when the coming lapse was last reported (domain.validation_lapsing).
CREATE TABLE domain_validations (
    account_id     BLOB NOT NULL REFERENCES acme_accounts(id),
    name           TEXT NOT NULL,
    last_valid_at  TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    lapse_noted_at TEXT,
    PRIMARY KEY (account_id, name)
);
CREATE INDEX domain_validations_expiry ON domain_validations(expires_at);

-- ARI (RFC 9773) per certificate version: the CA's last suggested window and when to ask
-- again (its Retry-After, clamped by [lifecycle]).
CREATE TABLE ari_windows (
    version_id   BLOB PRIMARY KEY REFERENCES certificate_versions(id),
    window_start TEXT NOT NULL,
    window_end   TEXT NOT NULL,
    polled_at    TEXT NOT NULL,
    next_poll_at TEXT NOT NULL
);
CREATE INDEX ari_windows_next_poll ON ari_windows(next_poll_at);

-- Renewals (and edits) reuse the current version's key when its type still matches; a
-- re-issue after a revocation never does.
ALTER TABLE certificates ADD COLUMN reuse_key INTEGER NOT NULL DEFAULT 0;

-- Outside revocation: when each certificate version's CRL was last checked and when to check
-- it again (a fetched CRL is cached in memory until its nextUpdate).
CREATE TABLE revocation_checks (
    version_id    BLOB PRIMARY KEY REFERENCES certificate_versions(id),
    checked_at    TEXT NOT NULL,
    next_check_at TEXT NOT NULL
);
CREATE INDEX revocation_checks_next ON revocation_checks(next_check_at);

-- Moves of certificates to another ACME account (another CA endpoint). One unfinished move per
-- certificate. state: queued -> ordering (order_id under to_account) -> issued (new version
-- current; waiting for every assigned agent to report it when revoke_old) -> done, or failed.
CREATE TABLE certificate_moves (
    id              BLOB PRIMARY KEY,
    certificate_id  BLOB NOT NULL REFERENCES certificates(id),
    from_account_id BLOB NOT NULL REFERENCES acme_accounts(id),
    to_account_id   BLOB NOT NULL REFERENCES acme_accounts(id),
    revoke_old      INTEGER NOT NULL,
    state           TEXT NOT NULL,
    old_version_id  BLOB,
    order_id        BLOB,
    new_version_id  BLOB,
    last_error      TEXT,
    started_at      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX certificate_moves_unfinished ON certificate_moves(certificate_id) WHERE state NOT IN ('done', 'failed');
CREATE INDEX certificate_moves_state ON certificate_moves(state, created_at);
