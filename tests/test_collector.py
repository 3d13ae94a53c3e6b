"""`tp live collect`: the exchange collector against a local Binance (tests/fake_exchange.py: a WebSocket and
an HTTP server started by the test, the only fake), a real PostgreSQL and the real ccxt.pro handlers.

Candle times lie in the past (the store quarantines candles that close in the future); the collector takes
the clock by injection, the fake's REST answers by the same clock."""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg
import pytest

from fake_exchange import FakeBinance
from fake_mexc import FakeMexc

FAKES = {"binance": FakeBinance, "mexc": FakeMexc}  # JSON frames and watch_ohlcv_for_symbols; protobuf, watch_ohlcv

T0 = 1_709_251_200_000  # 2024-03-01 00:00 UTC
MIN = 60_000


def truth(n: int, start: int = T0, base: float = 100.0) -> list[list]:
    """n one-minute candles from ``start``: a deterministic walk."""
    rows, price = [], base
    for i in range(n):
        o = price
        c = round(o * (1 + (0.003 if (i * 7) % 5 < 3 else -0.004)), 6)
        rows.append([start + i * MIN, o, round(max(o, c) * 1.001, 6), round(min(o, c) * 0.999, 6), c, 10.0 + i])
        price = c
    return rows


class Clock:
    def __init__(self, ms: int):
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def add_live(dsn: str, symbol: str, timeframes=("1m",), exchange: str = "binance") -> None:
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.store.db import connect

    with connect(dsn) as store:
        store.add_symbol(SymbolInfo.create(symbol, category="crypto", exchange=exchange,
                                           timeframes=list(timeframes), live=True), exist_ok=True)


def stored(dsn: str, symbol: str = "BTC/USDT", tf: str = "1m") -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return [(int(r[0].timestamp() * 1000), *map(float, r[1:])) for r in c.execute(
            "SELECT ts, open, high, low, close, volume FROM ohlcv WHERE symbol = %s AND timeframe = %s ORDER BY ts",
            (symbol, tf)).fetchall()]


def events(dsn: str, symbol: str = "BTC/USDT") -> list[tuple[int, int, str]]:
    """(event id, candle ms, change) of the symbol's live events, in id order."""
    with psycopg.connect(dsn) as c:
        return [(r[0], int(r[1].timestamp() * 1000), r[2]) for r in c.execute(
            "SELECT id, ts, change FROM market_events WHERE symbol = %s ORDER BY id", (symbol,)).fetchall()]


def status(dsn: str) -> dict[str, dict]:
    from trading_platform.store.collector import read_status

    with psycopg.connect(dsn) as c:
        return {r["name"]: r for r in read_status(c)}


async def until(pred, timeout: float = 10.0, what: str = "condition"):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        v = await asyncio.to_thread(pred)
        if v:
            return v
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def collector(dsn, fake, clock, **settings):
    from trading_platform.live.collector import Collector, CollectorSettings, default_exchange

    def factory(ex_id):
        ex = default_exchange(ex_id)
        fake.configure(ex)
        return ex

    cfg = CollectorSettings(**{"grace_s": 2.0, "refresh_s": 0.3, "status_s": 0.2, "reconnect_s": 0.1, **settings})
    return Collector(dsn, settings=cfg, clock=clock, exchange_factory=factory)


def as_row(c: list) -> tuple:
    return (int(c[0]), *map(float, c[1:6]))


@pytest.mark.parametrize("exchange", sorted(FAKES))
def test_a_forming_candle_is_never_written_and_a_closed_one_is_written_once_with_its_final_values(dsn, store,
                                                                                                    exchange):
    add_live(dsn, "BTC/USDT", exchange=exchange)
    rows = truth(13)                      # 00:00 .. 00:12; at the start 00:10 is forming (00:10:30)
    clock = Clock(T0 + 10 * MIN + 30_000)

    async def scenario():
        async with FAKES[exchange]({"BTC/USDT": rows[:11]}, clock=clock) as fake:
            c = collector(dsn, fake, clock)
            task = asyncio.create_task(c.run())
            await fake.wait_subscribed(fake.stream_name("BTC/USDT", "1m"))
            # the start heals the closed candles over REST; REST also gives the forming one: not written
            await until(lambda: len(stored(dsn)) == 10, what="the start's heal")
            assert [r[0] for r in stored(dsn)] == [r[0] for r in rows[:10]]
            await fake.push("BTC/USDT", partial_of(rows[10]))
            await asyncio.sleep(0.3)
            assert len(stored(dsn)) == 10, "a forming candle was written"
            # 00:11 starts: 00:10 is closed; it began before the stream connected, so REST gives its values
            clock.ms = T0 + 11 * MIN + 1_000
            fake.candles["BTC/USDT"] = rows[:12]
            await fake.push("BTC/USDT", partial_of(rows[11]))
            await until(lambda: len(stored(dsn)) == 11, what="00:10 closed")
            # 00:11 was streamed from its start: forming updates, its final values, then 00:12 closes it
            await fake.push("BTC/USDT", [rows[11][0], rows[11][1], rows[11][2], rows[11][3], rows[11][1], 3.0])
            await fake.push("BTC/USDT", rows[11])
            await asyncio.sleep(0.3)
            assert len(stored(dsn)) == 11, "a forming candle was written"
            clock.ms = T0 + 12 * MIN + 1_000
            await fake.push("BTC/USDT", partial_of(rows[12]))
            await until(lambda: len(stored(dsn)) == 12, what="00:11 closed")
            n_events = len(events(dsn))
            # a repeated frame and an out-of-order one of written buckets write nothing
            await fake.push("BTC/USDT", [rows[11][0], rows[11][1], rows[11][2], rows[11][3], rows[11][1], 99.0])
            await fake.push("BTC/USDT", rows[5])
            await asyncio.sleep(0.5)
            c.stop()
            await task
            assert fake.unexpected == []
            return n_events

    n_events = asyncio.run(scenario())
    got = stored(dsn)
    assert got == [as_row(r) for r in rows[:12]]                      # final values; 00:12 (forming) not written
    ev = events(dsn)
    assert len(ev) == n_events == 12 and [e[1] for e in ev] == [r[0] for r in rows[:12]]
    assert all(e[2] == "inserted" for e in ev)
    st = status(dsn)["BTC/USDT 1m"]
    assert st["candles_written"] == 12 and st["last_candle_ts"].timestamp() * 1000 == rows[11][0]
    assert st["state"] == "stopped"


def test_a_dropped_connection_is_healed_over_rest_in_order_before_the_stream_resumes(dsn, store):
    add_live(dsn, "BTC/USDT")
    rows = truth(20)
    clock = Clock(T0 + 5 * MIN + 10_000)

    async def scenario():
        async with FakeBinance({"BTC/USDT": rows[:6]}, clock=clock) as fake:
            c = collector(dsn, fake, clock)
            task = asyncio.create_task(c.run())
            await fake.wait_subscribed("btcusdt@kline_1m")
            await until(lambda: len(stored(dsn)) == 5, what="the start's heal")
            # the connection drops; meanwhile six more candles close (00:05 .. 00:10), the exchange keeps them
            fake.candles["BTC/USDT"] = rows[:12]
            clock.ms = T0 + 11 * MIN + 10_000
            connects = fake.connects
            await fake.drop()
            await until(lambda: len(stored(dsn)) == 11, what="the gap fetched over REST")
            await until(lambda: fake.connects > connects, what="the reconnect")
            await fake.wait_subscribed("btcusdt@kline_1m")
            # the stream resumes: 00:11 forms, 00:12 starts, 00:11 is written from the stream
            clock.ms = T0 + 12 * MIN + 1_000
            await asyncio.sleep(0.3)
            await fake.push("BTC/USDT", rows[11])
            await fake.push("BTC/USDT", rows[12])
            await until(lambda: len(stored(dsn)) == 12, what="the first candle after the reconnect")
            c.stop()
            await task

    asyncio.run(scenario())
    assert stored(dsn) == [as_row(r) for r in rows[:12]]
    ev = events(dsn)
    assert [e[1] for e in ev] == [r[0] for r in rows[:12]], "every candle has one event, in candle order"
    st = status(dsn)
    assert st["BTC/USDT 1m"]["gap_candles"] >= 11 and st["binance#0"]["reconnects"] >= 1


def test_a_symbol_set_live_while_running_is_subscribed_and_an_unlisted_one_is_reported(dsn, store):
    add_live(dsn, "BTC/USDT")
    rows = {"BTC/USDT": truth(4), "ETH/USDT": truth(4, base=50.0)}
    clock = Clock(T0 + 3 * MIN + 10_000)

    async def scenario():
        async with FakeBinance({k: v[:4] for k, v in rows.items()}, clock=clock) as fake:
            c = collector(dsn, fake, clock)
            task = asyncio.create_task(c.run())
            await fake.wait_subscribed("btcusdt@kline_1m")
            t = time.monotonic()
            await asyncio.to_thread(add_live, dsn, "ETH/USDT")
            await asyncio.to_thread(add_live, dsn, "NOPE/USDT")
            await fake.wait_subscribed("ethusdt@kline_1m", timeout=5.0)
            took = time.monotonic() - t
            await until(lambda: "NOPE/USDT 1m" in status(dsn), what="the unlisted symbol's status row")
            assert len(stored(dsn, "ETH/USDT")) == 3                    # healed on subscription
            clock.ms = T0 + 4 * MIN + 1_000                           # BTC goes on
            await fake.push("BTC/USDT", rows["BTC/USDT"][3])
            await fake.push("BTC/USDT", [T0 + 4 * MIN, 1.0, 1.0, 1.0, 1.0, 1.0])
            await until(lambda: len(stored(dsn, "BTC/USDT")) == 4, what="BTC's next candle")
            c.stop()
            await task
            return took

    took = asyncio.run(scenario())
    assert took < 5.0
    st = status(dsn)["NOPE/USDT 1m"]
    assert st["state"] == "skipped" and "binance does not list NOPE/USDT" in st["last_error"]
    assert stored(dsn, "NOPE/USDT") == []


def test_the_live_writer_role_may_call_the_write_path_and_nothing_else(dsn, store, monkeypatch):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from trading_platform.api.market import migrate

    monkeypatch.setenv("TP_DATABASE_URL", dsn)
    monkeypatch.setenv("TP_LIVE_WRITER_PASSWORD", "lw-pass-0451")
    out = migrate()
    assert "may log in" in out["live_writer"]
    add_live(dsn, "BTC/USDT")
    d = conninfo_to_dict(dsn)
    d.update(user="live_writer", password="lw-pass-0451")
    with psycopg.connect(make_conninfo(**d), autocommit=True) as w:
        r = w.execute("SELECT * FROM tp_live_candle('BTC/USDT', '1m', '2024-03-01 00:00+00', 1, 2, 0.5, 1.5, 10, "
                      "'outside')").fetchone()
        assert r[0] == "inserted" and r[1] is not None
        assert w.execute("SELECT count(*) FROM symbols").fetchone()[0] == 1
        for q in ("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) "
                  "VALUES ('BTC/USDT', '1m', '2024-03-01 00:01+00', 1, 1, 1, 1, 1)",
                  "SELECT * FROM predictions LIMIT 1", "DELETE FROM market_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute(q)
    assert stored(dsn) == [(T0, 1.0, 2.0, 0.5, 1.5, 10.0)]


def test_keys_and_passwords_appear_in_no_log_status_or_event(dsn, store, monkeypatch, caplog):
    """The collector connects as live_writer (a password in its DSN) with exchange keys in the environment; the
    exchange fails (HTTP 500 quoting the key) and the stream drops: neither secret reaches a log line, a status
    row, an event or a quarantined row."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from trading_platform.api.market import migrate

    key, secret, pw = "KEY-93be1f0c2a", "SECRET-5d11e8b0", "lw-pass-77c3e1"
    monkeypatch.setenv("TP_DATABASE_URL", dsn)
    monkeypatch.setenv("TP_LIVE_WRITER_PASSWORD", pw)
    monkeypatch.setenv("TP_EXCHANGE_BINANCE_API_KEY", key)
    monkeypatch.setenv("TP_EXCHANGE_BINANCE_SECRET", secret)
    migrate()
    add_live(dsn, "BTC/USDT")
    d = conninfo_to_dict(dsn)
    d.update(user="live_writer", password=pw)
    writer_dsn = make_conninfo(**d)
    rows = truth(8)
    clock = Clock(T0 + 4 * MIN + 10_000)
    caplog.set_level(logging.DEBUG)

    async def scenario():
        async with FakeBinance({"BTC/USDT": rows[:5]}, clock=clock) as fake:
            c = collector(writer_dsn, fake, clock)
            assert c._secrets and key in c._secrets
            ex = c.factory("binance")
            assert ex.apiKey == key and ex.secret == secret       # the keys reach the exchange
            await ex.close()
            task = asyncio.create_task(c.run())
            await fake.wait_subscribed("btcusdt@kline_1m")
            fake.fail_next("/api/v3/klines", 500, f'{{"code": -1, "msg": "bad key {key} / {secret} / {pw}"}}')
            clock.ms = T0 + 7 * MIN + 10_000
            fake.candles["BTC/USDT"] = rows[:8]
            await fake.drop()
            await until(lambda: len(stored(dsn)) == 7, what="the healed gap after the failure")
            c.stop()
            await task

    asyncio.run(scenario())
    st = status(dsn)
    assert any(r["last_error"] for r in st.values()), "the failure is reported"
    text = " ".join(str(v) for r in st.values() for v in r.values())
    text += " ".join(r.getMessage() for r in caplog.records)
    with psycopg.connect(dsn) as conn:
        text += str(conn.execute("SELECT * FROM market_events").fetchall())
        text += str(conn.execute("SELECT * FROM ingest_rejects").fetchall())
    for s in (key, secret, pw):
        assert s not in text


def test_an_unknown_exchange_is_exit_2_naming_it_and_symbols_refuse_it(dsn, store, tp_env):
    import json
    import subprocess
    import sys

    add_live(dsn, "BTC/USDT", exchange="nosuchx")  # written behind the CLI's back
    p = subprocess.run([sys.executable, "-m", "trading_platform.cli", "live", "collect", "--once", "--json"],
                       env=tp_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "nosuchx" in p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "trading_platform.cli", "symbols", "add", "SOL/USDT", "--category",
                        "crypto", "--exchange", "nosuchx", "--json"], env=tp_env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "nosuchx" in json.loads(p.stdout.strip().splitlines()[-1])["error"]
    p = subprocess.run([sys.executable, "-m", "trading_platform.cli", "symbols", "add", "MSFT", "--category",
                        "stock", "--exchange", "NASDAQ", "--json"], env=tp_env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr


def test_collect_once_writes_what_is_due_and_exits(dsn, store):
    from trading_platform.api.live import collect

    add_live(dsn, "BTC/USDT")
    add_live(dsn, "ETH/USDT", timeframes=("1m", "5m"))  # 5m is resampled from 1m by the live path: not fetched
    rows = {"BTC/USDT": truth(8), "ETH/USDT": truth(8, base=50.0)}
    clock = Clock(T0 + 7 * MIN + 5_000)

    async def serve():
        async with FakeBinance(rows, clock=clock) as fake:
            def factory(ex_id):
                from trading_platform.live.collector import default_exchange

                ex = default_exchange(ex_id)
                fake.configure(ex)
                return ex

            out = await asyncio.to_thread(collect, once=True, dsn=dsn, clock=clock, exchange_factory=factory)
            return out, list(fake.requests)

    out, requests = asyncio.run(serve())
    assert out["series"] == 2 and out["written"] == 14 and not out["skipped"]
    assert stored(dsn) == [as_row(r) for r in rows["BTC/USDT"][:7]]          # 00:07 was forming
    assert len(events(dsn, "ETH/USDT")) == 7
    assert not any("interval=5m" in r for r in requests)
    assert {r["name"]: r["state"] for r in status(dsn).values()} == {"BTC/USDT 1m": "polled", "ETH/USDT 1m": "polled"}


def test_tp_up_runs_the_collector_while_a_live_symbol_names_an_exchange(dsn, store, tmp_path):
    """`tp up`'s supervision (cli/supervisor.Collected): no collector on the synthetic market or without a live
    crypto symbol; started once both hold, restarted when it dies, left stopped after a refused configuration.
    The `tp` it starts is a stand-in script recording its arguments (the collector itself is tested above)."""
    from trading_platform.cli.supervisor import Collected, stop_children

    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    rc_file = tmp_path / "rc"
    rc_file.write_text("0")
    (bindir / "tp").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nsleep 0.3\nexit $(cat {rc_file})\n")
    (bindir / "tp").chmod(0o755)

    def started() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    def settle(c: Collected, until_s: float) -> None:
        t = time.monotonic()
        while time.monotonic() - t < until_s:
            c.check()
            time.sleep(0.1)

    c = Collected({"TP_SOURCE": "ccxt:binance", "PATH": "/usr/bin:/bin"}, bindir, dsn)
    add_live(dsn, "BTC/USDT", timeframes=("1h",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE symbols SET live = false")
    settle(c, 0.5)
    assert started() == 0 and c.proc is None                      # no live symbol
    synthetic = Collected({"TP_SOURCE": "synthetic:7", "PATH": "/usr/bin:/bin"}, bindir, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE symbols SET live = true")
    settle(synthetic, 0.5)
    assert started() == 0                                         # the synthetic market: no exchange to collect
    c.next_check = 0
    settle(c, 0.2)
    assert started() == 1 and calls.read_text().split() == ["live", "collect"]
    settle(c, 6.0)                                                # it exited 0.3 s later: restarted after 5 s
    assert started() == 2
    rc_file.write_text("2")
    settle(c, 6.0)                                                # a refused configuration is not retried
    n = started()
    settle(c, 6.0)
    assert started() == n and c.refused and c.proc is None
    stop_children(c.procs())


def test_a_candle_whose_last_update_the_stream_lost_is_revised_from_rest(dsn, store):
    """The stream dropped the closing update of 00:06 (the next bucket came): 00:06 is written with the last
    values the stream gave, and the next REST fetch (here after a disconnect) writes REST's values through the
    same path, as a revision: an `updated` event."""
    add_live(dsn, "BTC/USDT")
    rows = truth(9)
    clock = Clock(T0 + 5 * MIN + 50_000)

    async def scenario():
        async with FakeBinance({"BTC/USDT": rows[:6]}, clock=clock) as fake:
            c = collector(dsn, fake, clock)
            task = asyncio.create_task(c.run())
            await fake.wait_subscribed("btcusdt@kline_1m")
            await fake.push("BTC/USDT", partial_of(rows[5]))
            await asyncio.sleep(0.3)                                # the stream delivers from 00:05:50 on
            clock.ms = T0 + 6 * MIN + 1_000
            fake.candles["BTC/USDT"] = rows[:7]
            stale = [rows[6][0], rows[6][1], rows[6][1], rows[6][1], rows[6][1], 1.0]
            await fake.push("BTC/USDT", stale)                     # 00:06, streamed from its start
            await until(lambda: len(stored(dsn)) == 6, what="00:05")
            clock.ms = T0 + 7 * MIN + 1_000
            fake.candles["BTC/USDT"] = rows[:8]
            await fake.push("BTC/USDT", partial_of(rows[7]))       # 00:07 starts; 00:06's final update was lost
            await until(lambda: len(stored(dsn)) == 7, what="00:06 from the stream")
            assert stored(dsn)[-1] == as_row(stale)
            await fake.drop()
            await until(lambda: stored(dsn)[-1] == as_row(rows[6]), what="00:06 revised from REST")
            c.stop()
            await task

    asyncio.run(scenario())
    ev = [e for e in events(dsn) if e[1] == rows[6][0]]
    assert [e[2] for e in ev] == ["inserted", "updated"]
    assert len(events(dsn)) == 8


def partial_of(row: list) -> list:
    """A forming update of ``row`` (its open, a tenth of its volume)."""
    return [row[0], row[1], row[1], row[1], row[1], row[5] / 10]


def test_a_failed_heal_leaves_no_hole_when_the_stream_moves_on(dsn, store):
    """REST fails while the stream reconnects and moves on: the later candles wait, the heal is retried, and
    every candle is stored once, its event in candle order (before, the stream's next candle moved the series
    past the hole for good)."""
    add_live(dsn, "BTC/USDT")
    rows = truth(9)
    clock = Clock(T0 + 5 * MIN + 20_000)

    async def scenario():
        async with FakeBinance({"BTC/USDT": rows[:6]}, clock=clock) as fake:
            c = collector(dsn, fake, clock)
            task = asyncio.create_task(c.run())
            await fake.wait_subscribed("btcusdt@kline_1m")
            await until(lambda: len(stored(dsn)) == 5, what="the start's heal")
            fake.fail_next("/api/v3/klines", 503, '{"code": -1001, "msg": "Internal error"}', times=3)
            await fake.drop()
            await fake.wait_subscribed("btcusdt@kline_1m")
            await fake.push("BTC/USDT", partial_of(rows[5]))
            await asyncio.sleep(0.3)
            clock.ms = T0 + 6 * MIN + 1_000
            fake.candles["BTC/USDT"] = rows[:7]
            await fake.push("BTC/USDT", partial_of(rows[6]))       # 00:06 begins
            await fake.push("BTC/USDT", rows[6])                   # streamed from its start, final values
            clock.ms = T0 + 7 * MIN + 1_000
            fake.candles["BTC/USDT"] = rows[:8]
            await fake.push("BTC/USDT", partial_of(rows[7]))       # 00:07 closes 00:06: 00:05 is still missing
            await until(lambda: len(stored(dsn)) == 7, timeout=15, what="the hole filled once REST answers")
            c.stop()
            await task

    asyncio.run(scenario())
    assert stored(dsn) == [as_row(r) for r in rows[:7]]
    ev = events(dsn)
    assert [e[1] for e in ev] == [r[0] for r in rows[:7]], "one event per candle, in candle order"


def test_the_batch_writer_quarantines_a_candle_with_a_missing_value_and_writes_the_rest(dsn, store):
    from trading_platform.store.collector import write_batch

    add_live(dsn, "BTC/USDT")
    rows = truth(3)

    async def write():
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            return await write_batch(conn, [("BTC/USDT", "1m", rows[0], "t"), ("BTC/USDT", "1m", rows[1][:5] + [None], "t"),
                                            ("BTC/USDT", "1m", rows[2], "t")])
        finally:
            await conn.close()

    out = asyncio.run(write())
    assert [o for o, _ in out] == ["inserted", "quarantined", "inserted"]
    assert stored(dsn) == [as_row(rows[0]), as_row(rows[2])]
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT reason FROM ingest_rejects").fetchall() == [("missing volume",)]
