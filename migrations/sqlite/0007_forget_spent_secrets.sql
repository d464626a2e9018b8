-- Secrets are kept only while they are needed. An order's private key moves to its
-- certificate version when the order completes, and a failed order never uses its key again;
-- an EAB HMAC key is single use at the CA, so once the account is registered it is deleted.
UPDATE orders SET key_enc = NULL WHERE state IN ('done', 'failed');
UPDATE acme_accounts SET eab_hmac_enc = NULL WHERE credentials_enc IS NOT NULL;
