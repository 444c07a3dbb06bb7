-- cdclab: the MySQL/MariaDB source. Run as root; idempotent. Variables are substituted by the launcher:
-- ${SHOP_PASSWORD} and ${MAXWELL_PASSWORD} (from infra/credentials.env).
CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'shop'@'%' IDENTIFIED BY '${SHOP_PASSWORD}';
GRANT ALL PRIVILEGES ON shop.* TO 'shop'@'%';
-- the binlog reader: replication and read, nothing more
CREATE USER IF NOT EXISTS 'maxwell'@'%' IDENTIFIED BY '${MAXWELL_PASSWORD}';
GRANT SELECT, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'maxwell'@'%';
CREATE TABLE IF NOT EXISTS shop.customers (
    id          bigint PRIMARY KEY,
    email       varchar(320) NOT NULL UNIQUE,
    full_name   varchar(200) NOT NULL,
    home_tz     varchar(64) NOT NULL DEFAULT 'UTC',
    tier        varchar(20) NOT NULL DEFAULT 'basic',
    created_at  timestamp(6) NOT NULL DEFAULT current_timestamp(6),
    updated_at  timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6),
    version     integer NOT NULL DEFAULT 1,
    is_deleted  boolean NOT NULL DEFAULT false,
    deleted_at  timestamp(6) NULL
) ENGINE = InnoDB;
FLUSH PRIVILEGES;
