"""71_09_04: three hourly intervals into a star schema — new orders, an SCD2 tier change, an SCD1 price
change, an order whose customer arrives an interval later (inferred member, then completed); dimensions
and facts compared row by row with expectations computed here."""

from __future__ import annotations

from decimal import Decimal

import pendulum
from psycopg2 import sql

from tests.dagrun import run_dag

DAG_ID = "71_09_04_dw_loading"
SOURCES = {"customers": "cust", "products": "prod", "orders": "ord", "order_items": "item"}
NEG_INF = "-infinity"


def make_sources(shop_db, names):
    tables = {t: names(prefix) for t, prefix in SOURCES.items()}
    with shop_db.cursor() as cur:
        for logical, physical in tables.items():
            cur.execute(
                sql.SQL("CREATE TABLE public.{} (LIKE public.{} INCLUDING ALL)").format(
                    sql.Identifier(physical), sql.Identifier(logical)
                )
            )
            cur.execute(
                sql.SQL(
                    "CREATE TRIGGER touch_row BEFORE UPDATE ON public.{} "
                    "FOR EACH ROW EXECUTE FUNCTION public.touch_row()"
                ).format(sql.Identifier(physical))
            )
    return tables


def insert(shop_db, table, row):
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO public.{} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, row)),
                sql.SQL(", ").join(sql.Placeholder() * len(row)),
            ),
            list(row.values()),
        )


def update_at(shop_db, table, row_id, changes, at):
    """An update stamped at ``at``: the touch_row trigger would stamp now(); the test backdates the change
    into its interval (trigger off for this one statement, version bumped as the trigger would)."""
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        cur.execute(sql.SQL("ALTER TABLE public.{} DISABLE TRIGGER touch_row").format(t))
        cur.execute(
            sql.SQL("UPDATE public.{} SET {}, updated_at = %s, version = version + 1 WHERE id = %s").format(
                t, sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes)
            ),
            [*changes.values(), at, row_id],
        )
        assert cur.rowcount == 1
        cur.execute(sql.SQL("ALTER TABLE public.{} ENABLE TRIGGER touch_row").format(t))


def customer(cid, tier, at):
    return {
        "id": cid,
        "email": f"c{cid}@example.test",
        "full_name": f"Customer {cid}",
        "tier": tier,
        "created_at": at,
        "updated_at": at,
    }


def order(shop_db, tables, oid, cid, at, lines):
    insert(shop_db, tables["orders"], {"id": oid, "customer_id": cid, "ordered_at": at, "updated_at": at})
    for no, (pid, qty, price) in enumerate(lines, start=1):
        insert(
            shop_db,
            tables["order_items"],
            {
                "order_id": oid,
                "line_no": no,
                "product_id": pid,
                "quantity": qty,
                "unit_price": Decimal(price),
                "updated_at": at,
            },
        )


def dim_customers(warehouse_db, table):
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT customer_sk, customer_id, tier, email, source_version, "
                "CASE WHEN isfinite(valid_from) THEN to_char(valid_from AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS') ELSE '-infinity' END, valid_to, "
                "is_current, is_inferred FROM {} ORDER BY customer_id, valid_from"
            ).format(sql.SQL(".").join(map(sql.Identifier, table.split("."))))
        )
        return cur.fetchall()


def fetch(warehouse_db, query, table):
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL(query).format(sql.SQL(".").join(map(sql.Identifier, table.split(".")))))
        return cur.fetchall()


def test_star_schema_tracks_scd2_versions_scd1_overwrites_and_completes_inferred_customers(
    names, shop_db, warehouse_db
):
    tables = make_sources(shop_db, names)
    dim_c, dim_p, fact = names("core.dimc"), names("core.dimp"), names("core.fact")
    conf = {
        "customers_table": f"public.{tables['customers']}",
        "products_table": f"public.{tables['products']}",
        "orders_table": f"public.{tables['orders']}",
        "items_table": f"public.{tables['order_items']}",
        "dim_customer": dim_c,
        "dim_product": dim_p,
        "fact_table": fact,
        "watermark_prefix": names("71_09_04"),
    }
    h0 = pendulum.now("UTC").start_of("hour").subtract(hours=6)

    def at(hours, minutes):
        return h0.add(hours=hours, minutes=minutes)

    # interval 1 [h0, h0+1h): two customers, two products, two orders
    for cid in (1, 2):
        insert(shop_db, tables["customers"], customer(cid, "basic", at(0, 5)))
    for pid, price in ((10, "5.00"), (11, "7.50")):
        insert(
            shop_db,
            tables["products"],
            {
                "id": pid,
                "sku": f"SKU{pid}",
                "name": f"P{pid}",
                "price": Decimal(price),
                "updated_at": at(0, 5),
            },
        )
    order(shop_db, tables, 100, 1, at(0, 10), [(10, 2, "5.00"), (11, 1, "7.50")])
    order(shop_db, tables, 101, 2, at(0, 20), [(10, 1, "5.00")])
    run_dag(DAG_ID, at(1, 0), conf)

    c1 = dim_customers(warehouse_db, dim_c)
    assert [r[1:] for r in c1] == [
        (1, "basic", "c1@example.test", 1, NEG_INF, None, True, False),
        (2, "basic", "c2@example.test", 1, NEG_INF, None, True, False),
    ]
    sk1_v1, sk2 = c1[0][0], c1[1][0]
    p1 = fetch(warehouse_db, "SELECT product_id, product_sk, price, source_version FROM {} ORDER BY 1", dim_p)
    assert [(r[0], r[2], r[3]) for r in p1] == [(10, Decimal("5.00"), 1), (11, Decimal("7.50"), 1)]
    psk = {r[0]: r[1] for r in p1}

    # interval 2 [h0+1h, h0+2h): price change (SCD1), tier change at :30 (SCD2), orders before and after
    # it, and an order of customer 3 who is not in the source yet
    update_at(shop_db, tables["products"], 10, {"price": Decimal("6.00")}, at(1, 5))
    order(shop_db, tables, 102, 1, at(1, 10), [(10, 1, "6.00")])
    update_at(shop_db, tables["customers"], 1, {"tier": "gold"}, at(1, 30))
    order(shop_db, tables, 103, 1, at(1, 40), [(11, 3, "7.50")])
    order(shop_db, tables, 104, 3, at(1, 50), [(11, 1, "7.50")])
    run_dag(DAG_ID, at(2, 0), conf)

    c2 = dim_customers(warehouse_db, dim_c)
    assert [r[1:] for r in c2] == [
        (1, "basic", "c1@example.test", 1, NEG_INF, at(1, 30), False, False),
        (1, "gold", "c1@example.test", 2, at(1, 30).strftime("%Y-%m-%dT%H:%M:%S"), None, True, False),
        (2, "basic", "c2@example.test", 1, NEG_INF, None, True, False),
        (3, "unknown", None, 0, NEG_INF, None, True, True),
    ]
    assert c2[0][0] == sk1_v1 and c2[2][0] == sk2
    sk1_v2, sk3 = c2[1][0], c2[3][0]

    # interval 3 [h0+2h, h0+3h): customer 3 arrives (completes the inferred row), orders again, and
    # order 101 ships (an order-only change re-derives its lines)
    insert(shop_db, tables["customers"], customer(3, "silver", at(2, 15)))
    order(shop_db, tables, 105, 3, at(2, 20), [(10, 4, "6.00")])
    update_at(shop_db, tables["orders"], 101, {"status": "shipped"}, at(2, 30))
    run_dag(DAG_ID, at(3, 0), conf)

    c3 = dim_customers(warehouse_db, dim_c)
    assert [r[1:] for r in c3] == [
        (1, "basic", "c1@example.test", 1, NEG_INF, at(1, 30), False, False),
        (1, "gold", "c1@example.test", 2, at(1, 30).strftime("%Y-%m-%dT%H:%M:%S"), None, True, False),
        (2, "basic", "c2@example.test", 1, NEG_INF, None, True, False),
        (3, "silver", "c3@example.test", 1, NEG_INF, None, True, False),
    ]
    assert [r[0] for r in c3] == [sk1_v1, sk1_v2, sk2, sk3]  # the inferred row was completed in place

    products = fetch(
        warehouse_db,
        "SELECT product_id, product_sk, price, source_version, is_inferred FROM {} ORDER BY 1",
        dim_p,
    )
    assert products == [
        (10, psk[10], Decimal("6.00"), 2, False),  # overwritten in place, same key, no history
        (11, psk[11], Decimal("7.50"), 1, False),
    ]

    expected_facts = [
        # order, line, customer_sk (version valid at ordered_at), product_sk, status, qty, unit price
        (100, 1, sk1_v1, psk[10], "new", 2, Decimal("5.00")),
        (100, 2, sk1_v1, psk[11], "new", 1, Decimal("7.50")),
        (101, 1, sk2, psk[10], "shipped", 1, Decimal("5.00")),
        (102, 1, sk1_v1, psk[10], "new", 1, Decimal("6.00")),  # before the tier change at :30
        (103, 1, sk1_v2, psk[11], "new", 3, Decimal("7.50")),  # after it
        (104, 1, sk3, psk[11], "new", 1, Decimal("7.50")),  # loaded against the inferred member
        (105, 1, sk3, psk[10], "new", 4, Decimal("6.00")),
    ]
    facts = fetch(
        warehouse_db,
        "SELECT order_id, line_no, customer_sk, product_sk, status, quantity, unit_price, amount "
        "FROM {} ORDER BY order_id, line_no",
        fact,
    )
    assert [f[:7] for f in facts] == expected_facts
    assert [f[7] for f in facts] == [e[5] * e[6] for e in expected_facts]

    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT pipeline, rows_read, rows_written FROM state.run_metrics WHERE pipeline LIKE %s ORDER BY id",
            (f"71_09_04/{fact}/%",),
        )
        metrics = cur.fetchall()
    steps = [p.rsplit("/", 1)[1] for p, _, _ in metrics]
    assert steps == ["dim_customer", "dim_product", "fact_order_line"] * 3
    assert metrics[0][1:] == (2, 2)  # run 1 read and inserted two customers
    assert all(r >= 0 and w >= 0 for _, r, w in metrics)


def test_a_transaction_open_across_a_run_commits_late_and_the_next_run_loads_its_order(
    lab, names, shop_db, warehouse_db
):
    """``updated_at`` is a transaction's start. A transaction opens; an order committed after that start is
    there when the first run reads, the open transaction is not; then it inserts an order (stamped at its
    start, before the first order) and commits. The first run's watermarks stopped at the open
    transaction's start, so the second run loads both orders: no fact line is missed or doubled."""
    import psycopg2

    tables = make_sources(shop_db, names)
    dim_c, dim_p, fact = names("core.dimc"), names("core.dimp"), names("core.fact")
    conf = {
        "customers_table": f"public.{tables['customers']}",
        "products_table": f"public.{tables['products']}",
        "orders_table": f"public.{tables['orders']}",
        "items_table": f"public.{tables['order_items']}",
        "dim_customer": dim_c,
        "dim_product": dim_p,
        "fact_table": fact,
        "watermark_prefix": names("71_09_04"),
    }
    now = pendulum.now("UTC")
    insert(
        shop_db,
        tables["customers"],
        {k: v for k, v in customer(1, "basic", now).items() if k != "updated_at"},
    )
    insert(shop_db, tables["products"], {"id": 10, "sku": "SKU10", "name": "P10", "price": Decimal("5.00")})
    writer = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        with writer.cursor() as cur:
            cur.execute("SELECT now()")  # the long transaction is open from here on
            (started,) = cur.fetchone()
        # committed before the run, stamped after the open transaction's start (updated_at = now())
        insert(shop_db, tables["orders"], {"id": 200, "customer_id": 1})
        insert(
            shop_db,
            tables["order_items"],
            {"order_id": 200, "line_no": 1, "product_id": 10, "quantity": 2, "unit_price": Decimal("5.00")},
        )
        end = now.start_of("hour").add(hours=2)  # the run's interval ends in the future: the bound decides
        run_dag(DAG_ID, end, conf)
        first = fetch(warehouse_db, "SELECT order_id, line_no FROM {} ORDER BY 1, 2", fact)
        insert(writer, tables["orders"], {"id": 201, "customer_id": 1})  # stamped `started`
        insert(
            writer,
            tables["order_items"],
            {"order_id": 201, "line_no": 1, "product_id": 10, "quantity": 1, "unit_price": Decimal("5.00")},
        )
        writer.commit()
    finally:
        writer.rollback()
        writer.close()
    run_dag(DAG_ID, end.add(hours=1), conf)

    assert first == []  # order 200 waited: it is stamped after the transaction still open at the read
    with shop_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT min(updated_at) FROM public.{}").format(sql.Identifier(tables["orders"])))
        assert cur.fetchone()[0] == started  # the late order is the older one
    facts = fetch(warehouse_db, "SELECT order_id, line_no, quantity FROM {} ORDER BY 1, 2", fact)
    assert facts == [(200, 1, 2), (201, 1, 1)]


def test_set_based_and_row_by_row_loads_build_the_same_star_with_counters_as_predicted(
    names, shop_db, warehouse_db
):
    """One interval of 4 customers, 3 products and 12 two-line orders (one of an unknown customer): the
    compare task loads it row by row and set-based into scratch stars, then replays it. Same star; the
    naive load's statements grow with the lines, the set-based load's are a fixed handful; on replay the
    set-based load writes no row version, the naive one rewrites every row."""
    tables = make_sources(shop_db, names)
    dim_c, dim_p, fact = names("core.dimc"), names("core.dimp"), names("core.fact")
    conf = {
        "customers_table": f"public.{tables['customers']}",
        "products_table": f"public.{tables['products']}",
        "orders_table": f"public.{tables['orders']}",
        "items_table": f"public.{tables['order_items']}",
        "dim_customer": dim_c,
        "dim_product": dim_p,
        "fact_table": fact,
        "watermark_prefix": names("71_09_04"),
    }
    h0 = pendulum.now("UTC").start_of("hour").subtract(hours=6)
    for cid in (1, 2, 3, 4):
        insert(shop_db, tables["customers"], customer(cid, "basic", h0.add(minutes=1)))
    for pid in (10, 11, 12):
        insert(
            shop_db,
            tables["products"],
            {"id": pid, "sku": f"SKU{pid}", "name": f"P{pid}", "price": Decimal("2.50"), "updated_at": h0},
        )
    for k in range(12):
        cid = 9 if k == 11 else 1 + k % 4  # customer 9 is not in the source: an inferred member
        order(
            shop_db, tables, 300 + k, cid, h0.add(minutes=5 + k), [(10 + k % 3, 1, "2.50"), (12, 2, "2.50")]
        )
    scratch = {v: (f"{dim_c}__{v}", f"{dim_p}__{v}", f"{fact}__{v}") for v in ("row_by_row", "set_based")}
    try:
        run_dag(DAG_ID, h0.add(hours=1), conf)
        # the same star: dimensions and facts by natural key, also equal to the DAG's own star
        stars = {}
        for v, (c, p, f) in scratch.items():
            stars[v] = (
                fetch(
                    warehouse_db,
                    "SELECT customer_id, tier, email, source_version, is_current, is_inferred FROM {} "
                    "ORDER BY customer_id, valid_from",
                    c,
                ),
                fetch(
                    warehouse_db,
                    "SELECT product_id, price, source_version, is_inferred FROM {} ORDER BY 1",
                    p,
                ),
                fetch(
                    warehouse_db,
                    "SELECT order_id, line_no, customer_id, product_id, quantity, amount FROM {} ORDER BY 1, 2",
                    f,
                ),
            )
        assert stars["row_by_row"] == stars["set_based"]
        customers, products, facts = stars["set_based"]
        assert len(customers) == 5 and customers[-1][:2] == (9, "unknown") and customers[-1][5] is True
        assert len(products) == 3 and len(facts) == 24
        assert facts == fetch(
            warehouse_db,
            "SELECT order_id, line_no, customer_id, product_id, quantity, amount FROM {} ORDER BY 1, 2",
            fact,
        )
        log = fetch(
            warehouse_db,
            "SELECT variant, pass, lines, statements, rows_returned, rows_rewritten, "
            "lookup_plan->>'uses_index', (lookup_plan->>'runs')::int FROM {} ORDER BY id",
            f"{fact}__loading_compare",
        )
        got = {(r[0], r[1]): r[2:] for r in log}
        assert sorted(got) == [
            ("row_by_row", "load"),
            ("row_by_row", "replay"),
            ("set_based", "load"),
            ("set_based", "replay"),
        ]
        naive_load, naive_replay = got["row_by_row", "load"], got["row_by_row", "replay"]
        set_load, set_replay = got["set_based", "load"], got["set_based", "replay"]
        assert all(r[0] == 24 for r in got.values())
        # statements: O(rows) row by row (at least one lookup + one write per line and per dimension row),
        # a fixed handful set-based, the same on load and replay
        assert naive_load[1] >= 3 * 24 + 4 + 3
        assert naive_replay[1] >= 3 * 24 + 4 + 3
        # (set-based: staging, the SCD2 steps, one upsert page, the fact steps: 15 here, whatever the rows)
        assert set_load[1] == set_replay[1] <= 20
        # rows sent back to the client: one per lookup row by row; none needed set-based beyond RETURNING
        assert naive_load[2] >= 24 and naive_load[2] > set_load[2]
        # row versions: every row is written on load; on replay the set-based load skips every unchanged
        # row, the row-by-row load rewrites every row the batch carries (4 customers, 3 products, 24 lines;
        # the inferred customer 9 is only looked up)
        assert naive_load[3] == set_load[3] == 5 + 3 + 24
        assert set_replay[3] == 0
        assert naive_replay[3] == 4 + 3 + 24
        # the customer lookup: one lookup run once per line vs one join run once (on these few rows the
        # planner may well pick a sequential scan for either: the plan is recorded, not asserted)
        assert naive_load[4] in ("true", "false") and set_load[4] in ("true", "false")
        assert naive_load[5] == 24 and set_load[5] == 1
    finally:
        with shop_db.cursor() as cur:
            for t in tables.values():
                cur.execute(sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(t)))
        with warehouse_db.cursor() as cur:
            for t in [
                fact,
                dim_c,
                dim_p,
                f"{fact}__loading_compare",
                *(t for ts in scratch.values() for t in ts),
            ]:
                cur.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(
                        sql.SQL(".").join(map(sql.Identifier, t.split(".")))
                    )
                )
