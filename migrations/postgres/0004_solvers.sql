-- Challenge solvers: the responses published for in-flight orders. A row is written before the
-- response is published (TXT record added, token served) and deleted after it was removed, so a
-- job resumed after a crash finds and removes what an earlier run left behind. The http-01
-- responder serves the key authorizations of these rows (shared by every server process).
CREATE TABLE challenge_responses (
    id                UUID PRIMARY KEY,
    order_id          UUID NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,                      -- identifier, `*.`-prefixed for wildcards
    kind              TEXT NOT NULL,                      -- dns-01 | http-01
    url               TEXT NOT NULL,                      -- the challenge URL at the CA
    token             TEXT NOT NULL,
    key_authorization TEXT NOT NULL,                      -- token.thumbprint: public, not a secret
    created_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (order_id, url)
);
CREATE INDEX challenge_responses_token ON challenge_responses(token);
