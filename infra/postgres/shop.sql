-- cdclab: the `shop` source schema (OLTP). Run as the `shop` role in database `shop`; idempotent.
-- updated_at and version are kept by a trigger, so every writer gets them right; updated_at is the
-- transaction's start time (now()), which is exactly why a long transaction can commit "in the past".
\set ON_ERROR_STOP on

CREATE OR REPLACE FUNCTION public.touch_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    NEW.version := COALESCE(OLD.version, 0) + 1;
    RETURN NEW;
END $$;

CREATE TABLE IF NOT EXISTS public.customers (
    id          bigint PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    full_name   text NOT NULL,
    home_tz     text NOT NULL DEFAULT 'UTC',
    tier        text NOT NULL DEFAULT 'basic',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1,
    is_deleted  boolean NOT NULL DEFAULT false,
    deleted_at  timestamptz
);
CREATE TABLE IF NOT EXISTS public.products (
    id          bigint PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    name        text NOT NULL,
    price       numeric(12, 2) NOT NULL CHECK (price >= 0),
    description text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1,
    is_deleted  boolean NOT NULL DEFAULT false,
    deleted_at  timestamptz
);
CREATE TABLE IF NOT EXISTS public.orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    status      text NOT NULL DEFAULT 'new',
    ordered_at  timestamptz NOT NULL DEFAULT now(),
    total       numeric(12, 2) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS public.order_items (
    order_id    bigint NOT NULL REFERENCES public.orders (id) ON DELETE CASCADE,
    line_no     integer NOT NULL,
    product_id  bigint NOT NULL REFERENCES public.products (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(12, 2) NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE IF NOT EXISTS public.payments (
    id          bigint PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES public.orders (id) ON DELETE CASCADE,
    amount      numeric(12, 2) NOT NULL,
    method      text NOT NULL,
    paid_at     timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'products', 'orders', 'order_items', 'payments'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS touch_row ON public.%I', t);
        EXECUTE format('CREATE TRIGGER touch_row BEFORE UPDATE ON public.%I
                        FOR EACH ROW EXECUTE FUNCTION public.touch_row()', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (updated_at)', t || '_updated_at_idx', t);
    END LOOP;
END $$;

-- Before-images (the whole old row) for the tables whose history the warehouse keeps.
ALTER TABLE public.customers REPLICA IDENTITY FULL;
ALTER TABLE public.products REPLICA IDENTITY FULL;
ALTER TABLE public.orders REPLICA IDENTITY FULL;

-- Debezium's heartbeat table: the connector updates it so the slot advances on a quiet database.
CREATE TABLE IF NOT EXISTS public.cdc_heartbeat (id integer PRIMARY KEY, ts timestamptz NOT NULL);
-- Debezium's signal table: INSERT a row here to start an incremental snapshot.
CREATE TABLE IF NOT EXISTS public.debezium_signal (
    id   varchar(64) PRIMARY KEY,
    type varchar(32) NOT NULL,
    data varchar(2048)
);

GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc_replicator;
ALTER DEFAULT PRIVILEGES FOR ROLE shop IN SCHEMA public GRANT SELECT ON TABLES TO cdc_replicator;
GRANT INSERT, UPDATE ON public.cdc_heartbeat TO cdc_replicator;
GRANT SELECT, INSERT, DELETE ON public.debezium_signal TO cdc_replicator;

-- The lab's workload service (cdclab.lab.shop_workload): one row per runner, `shop` for the lab's own.
-- `applied` counts the operations of the runner's plan already committed (in the same transaction as
-- the changes); `rate` (operations per second) and `paused` are what `make workload RATE=...`,
-- `make workload-pause` and `make workload-resume` set. Outside `public`: Debezium does not capture it.
CREATE SCHEMA IF NOT EXISTS lab;
CREATE TABLE IF NOT EXISTS lab.workload (
    name       text PRIMARY KEY,
    seed       integer NOT NULL,
    applied    bigint NOT NULL DEFAULT 0 CHECK (applied >= 0),
    rate       double precision NOT NULL CHECK (rate >= 0),
    paused     boolean NOT NULL DEFAULT false,
    -- items written to the 71.6 lessons' source tables (cdclab.lab.lesson_feed)
    feed_applied bigint NOT NULL DEFAULT 0 CHECK (feed_applied >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- the business clock's start of the runner's plan, fixed on its first start so that the seed's
    -- business time ends then (operation i is at plan_start + i minutes, never after the wall clock)
    plan_start timestamptz,
    -- partner files dropped into the landing bucket (cdclab.lab.partner_drops)
    files_dropped bigint NOT NULL DEFAULT 0 CHECK (files_dropped >= 0)
);
-- labs created before these columns existed
ALTER TABLE lab.workload ADD COLUMN IF NOT EXISTS plan_start timestamptz;
ALTER TABLE lab.workload ADD COLUMN IF NOT EXISTS files_dropped bigint NOT NULL DEFAULT 0
    CHECK (files_dropped >= 0);
