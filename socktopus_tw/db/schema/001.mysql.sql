-- Version 1: user accounts and their sessions.
CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(64) CHARACTER SET ascii NOT NULL,
    -- lower-cased name: names are unique and matched case-insensitively
    name_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL UNIQUE,
    email VARCHAR(254) NOT NULL,
    password_hash VARCHAR(80) CHARACTER SET ascii NOT NULL,
    registered TINYINT NOT NULL DEFAULT 0,
    -- hex one-time code mailed to the user; NULL once used
    registration_code VARCHAR(128) CHARACTER SET ascii,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One live session per user: logging in again returns the same secret.
CREATE TABLE sessions (
    user_id BIGINT NOT NULL PRIMARY KEY,
    secret VARCHAR(100) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    expires_at BIGINT NOT NULL,
    stay_logged_in TINYINT NOT NULL DEFAULT 0,
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
