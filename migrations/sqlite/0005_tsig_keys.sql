-- TSIG secrets of dns-01 solvers, sealed with age like every other secret (plaintext binds
-- tsig_keys.secret_enc:<id>). Stored with `certkeep dns-key import`; a solver entry without
-- secret_file uses the key stored under its key_name.
CREATE TABLE tsig_keys (
    id          BLOB PRIMARY KEY,
    key_name    TEXT NOT NULL UNIQUE,
    secret_enc  BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
