-- Version 2: Auth Headers already accepted (SPEC 4.1: a set of headers is
-- accepted once). Kept in the database, not in one process, so neither a
-- restarted daemon nor another daemon on this database accepts them again.
-- A row is dropped once its Time-Sent is outside the 10 s window, when the
-- time check alone refuses the headers.
CREATE TABLE seen_headers (
    -- first in the key, so dropping old rows is a range of the key
    time_sent BIGINT NOT NULL,
    user_id INTEGER NOT NULL,
    -- the HMAC, hex
    mac VARCHAR(64) NOT NULL,
    PRIMARY KEY (time_sent, user_id, mac)
) WITHOUT ROWID;
