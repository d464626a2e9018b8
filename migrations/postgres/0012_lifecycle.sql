-- Domain-validation ledger: per ACME account and name, when the CA last showed a valid
-- authorization and when that validation lapses (the authorization's `expires`).
-- lapse_noted_at: when the coming lapse was last reported (domain.validation_lapsing).
CREATE TABLE domain_validations (
    account_id     UUID NOT NULL REFERENCES acme_accounts(id),
    name           TEXT NOT NULL,
    last_valid_at  TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    lapse_noted_at TIMESTAMPTZ,
    PRIMARY KEY (account_id, name)
);
CREATE INDEX domain_validations_expiry ON domain_validations(expires_at);

-- ARI (RFC 9773) per certificate version: the CA's last suggested window and when to ask
-- again (its Retry-After, clamped by [lifecycle]).
CREATE TABLE ari_windows (
    version_id   UUID PRIMARY KEY REFERENCES certificate_versions(id),
    window_start TIMESTAMPTZ NOT NULL,
    window_end   TIMESTAMPTZ NOT NULL,
    polled_at    TIMESTAMPTZ NOT NULL,
    next_poll_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ari_windows_next_poll ON ari_windows(next_poll_at);

-- Renewals (and edits) reuse the current version's key when its type still matches; a
-- re-issue after a revocation never does.
ALTER TABLE certificates ADD COLUMN reuse_key BOOLEAN NOT NULL DEFAULT FALSE;

-- Outside revocation: when each certificate version's CRL was last checked and when to check
-- it again (a fetched CRL is cached in memory until its nextUpdate).
CREATE TABLE revocation_checks (
    version_id    UUID PRIMARY KEY REFERENCES certificate_versions(id),
    checked_at    TIMESTAMPTZ NOT NULL,
    next_check_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX revocation_checks_next ON revocation_checks(next_check_at);

-- Moves of certificates to another ACME account (another CA endpoint). One unfinished move per
-- certificate. state: queued -> ordering (order_id under to_account) -> issued (new version
-- current; waiting for every assigned agent to report it when revoke_old) -> done, or failed.
CREATE TABLE certificate_moves (
    id              UUID PRIMARY KEY,
    certificate_id  UUID NOT NULL REFERENCES certificates(id),
    from_account_id UUID NOT NULL REFERENCES acme_accounts(id),
    to_account_id   UUID NOT NULL REFERENCES acme_accounts(id),
    revoke_old      BOOLEAN NOT NULL,
    state           TEXT NOT NULL,
    old_version_id  UUID,
    order_id        UUID,
    new_version_id  UUID,
    last_error      TEXT,
    started_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX certificate_moves_unfinished ON certificate_moves(certificate_id) WHERE state NOT IN ('done', 'failed');
CREATE INDEX certificate_moves_state ON certificate_moves(state, created_at);
