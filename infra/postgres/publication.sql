-- cdclab: the publication Debezium streams from (created by a superuser; Debezium's role cannot).
-- Filtered to the `public` schema of `shop`: tables that tests create there are captured too.
\set ON_ERROR_STOP on
SELECT 'CREATE PUBLICATION cdclab_shop FOR TABLES IN SCHEMA public'
WHERE NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'cdclab_shop') \gexec
