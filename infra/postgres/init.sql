-- cdclab: roles and databases. Run once by a superuser (idempotent: safe to run again).
-- psql variables: shop_password, warehouse_password, cdc_password, airflow_password.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE shop LOGIN PASSWORD %L', :'shop_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop') \gexec
SELECT format('CREATE ROLE warehouse LOGIN PASSWORD %L', :'warehouse_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse') \gexec
-- Debezium's role: may stream WAL and read the shop tables, nothing more.
SELECT format('CREATE ROLE cdc_replicator LOGIN REPLICATION PASSWORD %L', :'cdc_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdc_replicator') \gexec
SELECT format('CREATE ROLE airflow LOGIN PASSWORD %L', :'airflow_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'airflow') \gexec
-- Timestamp reads bound themselves by the oldest open transaction of any role (cdclab.delta.detection.read_upper_bound):
-- the readers must see other roles' xact_start in pg_stat_activity.
GRANT pg_read_all_stats TO shop;

SELECT 'CREATE DATABASE shop OWNER shop' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'shop') \gexec
SELECT 'CREATE DATABASE warehouse OWNER warehouse' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'warehouse') \gexec
SELECT 'CREATE DATABASE airflow OWNER airflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'airflow') \gexec

\connect warehouse
ALTER SCHEMA public OWNER TO warehouse;
CREATE SCHEMA IF NOT EXISTS staging AUTHORIZATION warehouse;
CREATE SCHEMA IF NOT EXISTS core AUTHORIZATION warehouse;
CREATE SCHEMA IF NOT EXISTS marts AUTHORIZATION warehouse;
CREATE SCHEMA IF NOT EXISTS state AUTHORIZATION warehouse;
CREATE SCHEMA IF NOT EXISTS dlq AUTHORIZATION warehouse;
-- hstore columns of shop tables replicate into hstore columns here (docs/cdc_types.md)
CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;

\connect airflow
ALTER SCHEMA public OWNER TO airflow;

\connect shop
ALTER SCHEMA public OWNER TO shop;
GRANT USAGE ON SCHEMA public TO cdc_replicator;
GRANT CREATE ON DATABASE shop TO cdc_replicator;
-- hstore ships with PostgreSQL (contrib); Debezium sends its values as JSON objects (docs/cdc_types.md)
CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;
