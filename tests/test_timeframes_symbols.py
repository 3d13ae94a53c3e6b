import pytest

from trading_platform.core.symbols import SymbolInfo, validate_symbol
from trading_platform.core.timeframes import TIMEFRAMES, parse_timeframe
from trading_platform.errors import InvalidInput


@pytest.mark.parametrize("alias,expected", [
    ("60m", "1h"), ("H1", "1h"), ("1H", "1h"), ("D1", "1d"), ("1wk", "1w"), ("1day", "1d"),
    ("5min", "5m"), ("M15", "15m"), ("240m", "4h"), ("1m", "1m"), ("4h", "4h"),
])
def test_timeframe_aliases(alias, expected):
    assert parse_timeframe(alias) == expected


@pytest.mark.parametrize("bad", ["2m", "1M", "", "fortnight", "3h"])
def test_unknown_timeframes_are_refused_with_the_list(bad):
    with pytest.raises(InvalidInput) as e:
        parse_timeframe(bad)
    assert e.value.field == "timeframe"
    assert "1m" in e.value.message and "1w" in e.value.message


def test_timeframe_list_is_fixed():
    assert list(TIMEFRAMES) == ["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]


@pytest.mark.parametrize("name", ["BTC/USDT", "BTC/USDT:USDT", "EURUSD=X", "^GSPC", "BRK.B", "GC=F", "BTC-USD"])
def test_exchange_and_yahoo_names_are_accepted(name):
    assert validate_symbol(name) == name


@pytest.mark.parametrize("name", [
    "BTC'; DROP TABLE ohlcv;--", "BTC USDT", "a|b", "a,b", "a[1]", "x]", 'q"', "tab\tx", "", "x" * 65, "///",
])
def test_bad_symbol_names_are_refused(name):
    with pytest.raises(InvalidInput) as e:
        validate_symbol(name)
    assert e.value.field == "symbol"


def test_symbol_info_infers_category_and_pair():
    btc = SymbolInfo.create("BTC/USDT:USDT", timeframes=["1h", "5m", "60m"])
    assert (btc.category, btc.base, btc.quote) == ("crypto", "BTC", "USDT")
    assert btc.timeframes == ["5m", "1h"] and btc.base_timeframe == "5m"
    eur = SymbolInfo.create("EURUSD=X")
    assert (eur.category, eur.base, eur.quote) == ("forex", "EUR", "USD")
    assert SymbolInfo.create("AAPL").category == "stock"
    with pytest.raises(InvalidInput) as e:
        SymbolInfo.create("AAPL", category="bond")
    assert e.value.field == "category"
