-- Version 3: failed logins (SPEC 8.1), password reset codes (8.2) and the
-- audit log (8.3). Counts and codes live in the database, so every daemon on
-- it and a restarted one see them.

-- Failed logins in a row of one (user name, client IP) pair, and of one IP
-- alone (name_key ''). A count older than 15 minutes starts again.
CREATE TABLE login_failures (
    -- the lower-cased user name, or '' for the IP's own count
    name_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    ip VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    failures INTEGER NOT NULL,
    -- Unix milliseconds of the last failure
    last_failure BIGINT NOT NULL,
    -- Unix milliseconds before which logins of the pair (or the IP) are refused
    blocked_until BIGINT NOT NULL,
    PRIMARY KEY (name_key, ip),
    KEY login_failures_last (last_failure)
) ENGINE=InnoDB DEFAULT CHARSET=ascii;

-- The one live reset code of a user: a newer request replaces it.
CREATE TABLE password_resets (
    user_id BIGINT NOT NULL PRIMARY KEY,
    -- SHA-256 of the mailed code, hex: the code itself is never stored
    code_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- Unix milliseconds
    expires_at BIGINT NOT NULL,
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=ascii;

-- What happened to each account: no secret, password or code in it.
CREATE TABLE account_events (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    type VARCHAR(32) CHARACTER SET ascii NOT NULL,
    -- Unix milliseconds
    time BIGINT NOT NULL,
    ip VARCHAR(64) CHARACTER SET ascii NOT NULL,
    KEY account_events_user (user_id, id),
    KEY account_events_time (time)
) ENGINE=InnoDB DEFAULT CHARSET=ascii;
