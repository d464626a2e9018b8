-- The client certificate an agent presented when it last renewed. Accepted alongside
-- cert_serial until the agent first authenticates with cert_serial, so a lost renewal reply
-- never locks the agent out; cleared at that first use, on enrollment and on revocation.
ALTER TABLE agents ADD COLUMN previous_cert_serial TEXT;
