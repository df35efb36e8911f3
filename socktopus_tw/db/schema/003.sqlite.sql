-- Version 3: failed logins (SPEC 8.1), password reset codes (8.2) and the
-- audit log (8.3). Counts and codes live in the database, so every daemon on
-- it and a restarted one see them.

-- Failed logins in a row of one (user name, client IP) pair, and of one IP
-- alone (name_key ''). A count older than 15 minutes starts again.
CREATE TABLE login_failures (
    -- the lower-cased user name, or '' for the IP's own count
    name_key VARCHAR(64) NOT NULL,
    ip VARCHAR(64) NOT NULL,
    failures INTEGER NOT NULL,
    -- Unix milliseconds of the last failure
    last_failure BIGINT NOT NULL,
    -- Unix milliseconds before which logins of the pair (or the IP) are refused
    blocked_until BIGINT NOT NULL,
    PRIMARY KEY (name_key, ip)
);
CREATE INDEX login_failures_last ON login_failures (last_failure);

-- The one live reset code of a user: a newer request replaces it.
CREATE TABLE password_resets (
    user_id INTEGER PRIMARY KEY REFERENCES users (id),
    -- SHA-256 of the mailed code, hex: the code itself is never stored
    code_hash VARCHAR(64) NOT NULL,
    -- Unix milliseconds
    expires_at BIGINT NOT NULL
);

-- What happened to each account: no secret, password or code in it.
CREATE TABLE account_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    type VARCHAR(32) NOT NULL,
    -- Unix milliseconds
    time BIGINT NOT NULL,
    ip VARCHAR(64) NOT NULL
);
CREATE INDEX account_events_user ON account_events (user_id, id);
CREATE INDEX account_events_time ON account_events (time);
