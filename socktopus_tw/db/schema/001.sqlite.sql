-- Version 1: user accounts and their sessions.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(64) NOT NULL,
    -- lower-cased name: names are unique and matched case-insensitively
    name_key VARCHAR(64) NOT NULL UNIQUE,
    email VARCHAR(254) NOT NULL,
    password_hash VARCHAR(80) NOT NULL,
    registered INTEGER NOT NULL DEFAULT 0,
    -- hex one-time code mailed to the user; NULL once used
    registration_code VARCHAR(128),
    created_at BIGINT NOT NULL
);

-- One live session per user: logging in again returns the same secret.
CREATE TABLE sessions (
    user_id INTEGER PRIMARY KEY REFERENCES users (id),
    secret VARCHAR(100) NOT NULL,
    expires_at BIGINT NOT NULL,
    stay_logged_in INTEGER NOT NULL DEFAULT 0
);
