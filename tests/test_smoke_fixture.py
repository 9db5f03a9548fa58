def test_fixture_gives_fresh_database(postgresql, dsn):
    assert postgresql.execute("select current_database()").fetchone()[0] in dsn
