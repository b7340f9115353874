"""The tests' PostgreSQL harness: every test that asks for a database gets a new, empty one.

The database is created while the test before runs (harness/postgres.py, ``fresh_database``): these tests
hold what that must not change.
"""

from __future__ import annotations

import psycopg

from harness.postgres import PostgresServer, new_server


def databases(server: PostgresServer) -> set[str]:
    with psycopg.connect(server.url, autocommit=True) as connection:
        rows = connection.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()
    return {row[0] for row in rows}


def tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return [row[0] for row in rows]


def test_each_database_handed_out_is_new_and_empty_whatever_the_one_before_holds(
    postgres_server: PostgresServer,
):
    first = postgres_server.fresh_database()
    with psycopg.connect(postgres_server.url_for(first), autocommit=True) as connection:
        connection.execute("CREATE TABLE users (id integer)")
        connection.execute("INSERT INTO users VALUES (1)")
    second = postgres_server.fresh_database()
    third = postgres_server.fresh_database()
    try:
        assert len({first, second, third}) == 3
        assert tables(postgres_server.url_for(second)) == []
        assert tables(postgres_server.url_for(third)) == []
    finally:
        for name in (first, second, third):
            postgres_server.drop_database(name)


def test_a_server_stopped_after_handing_out_a_database_leaves_none_behind_and_hands_out_more_after():
    server = new_server()
    try:
        before = databases(server)
        handed = server.fresh_database()
        server.stop()  # while the next database may still be under creation
        server.start()
        assert databases(server) == before | {handed}
        again = server.fresh_database()
        assert again not in before | {handed}
        assert tables(server.url_for(again)) == []
    finally:
        server.destroy()
