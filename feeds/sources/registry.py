"""Config name -> websocket source class (cryptofeed's EXCHANGE_MAP).

The runtime builds one adapter per enabled ``[feeds.<name>]`` section from this map.
"""

from __future__ import annotations

from feeds.sources.bitstamp import Bitstamp
from feeds.sources.coinbase import CoinbaseExchange
from feeds.sources.kraken import KrakenV2
from feeds.sources.mempool_ws import MempoolWs
from feeds.transport import WsAdapter

SOURCES: dict[str, type[WsAdapter]] = {
    "mempool": MempoolWs,
    "coinbase": CoinbaseExchange,
    "kraken": KrakenV2,
    "bitstamp": Bitstamp,
}

#: The websocket sources that carry BTC/USD prices (REST fallback watches these).
PRICE_WS_SOURCES: tuple[str, ...] = ("coinbase", "kraken", "bitstamp")
