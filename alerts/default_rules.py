"""The built-in rule set: what runs when the config file defines no [[rules]].

The sample ``config.toml`` spells out exactly these rules with a comment on each (a test
asserts both are equal), so an operator who copies it starts from the same behaviour and
edits from there. The reasoning behind each threshold lives in those comments.
"""

from __future__ import annotations

from alerts.settings import RuleConfig

_MIN = 60.0
_HOUR = 3600.0
_DAY = 86400.0

DEFAULT_RULES: tuple[RuleConfig, ...] = (
    RuleConfig(
        name="hashrate-drop",
        metric="hashrate_7d",
        severity="warning",
        message="7-day hashrate {value:.1f}% below its 30-day peak",
        drop_pct=10.0,
        window=30 * _DAY,
        clear=7.0,
        for_=1 * _HOUR,
        repeat=1 * _DAY,
    ),
    RuleConfig(
        name="hashprice-floor",
        metric="hashprice",
        severity="critical",
        message="hashprice ${value:.1f}/PH/day below ${threshold:g}",
        below=40.0,
        clear=42.0,
        for_=15 * _MIN,
        repeat=12 * _HOUR,
    ),
    RuleConfig(
        name="hashprice-fall-24h",
        metric="hashprice",
        severity="warning",
        message="hashprice {value:+.1f}% in 24 h, now ${hashprice:.1f}/PH/day",
        change_pct=-10.0,
        window=1 * _DAY,
        clear=-5.0,
        for_=10 * _MIN,
    ),
    RuleConfig(
        name="difficulty-projection",
        metric="difficulty_projected_change_pct",
        severity="info",
        message="projected difficulty change {value:+.1f}% at block {retarget_height:.0f}",
        above=5.0,
        below=-5.0,
        for_=2 * _HOUR,
    ),
    RuleConfig(
        name="difficulty-retarget",
        metric="difficulty_change_pct",
        severity="warning",
        message="difficulty retarget {value:+.1f}%",
        above=5.0,
        below=-5.0,
        send_resolved=False,
    ),
    RuleConfig(
        name="price-below-network-cost",
        metric="price_to_cost_pct",
        severity="warning",
        message="BTC ${price_usd:,.0f} is {value:+.1f}% against the modelled network "
        "production cost ${network_production_cost_usd:,.0f}",
        below=0.0,
        clear=2.0,
        for_=1 * _HOUR,
        repeat=1 * _DAY,
    ),
    RuleConfig(
        name="fleet-margin-negative",
        metric="margin",
        severity="critical",
        message="fleet margin ${value:.2f}/PH/day: hashcost ${hashcost:.2f} above net "
        "hashprice ${hashprice_net:.2f}",
        below=0.0,
        clear=1.0,
        for_=30 * _MIN,
        repeat=12 * _HOUR,
    ),
    *(
        RuleConfig(
            name=f"feed-stale-{source}",
            metric=f"feed_age_s.{source}",
            severity="warning",
            message=f"{source} price feed silent for {{value:.0f}} s",
            above=120.0,
            clear=30.0,
            repeat=6 * _HOUR,
        )
        for source in ("coinbase", "kraken", "bitstamp")
    ),
    RuleConfig(
        name="price-feeds-down",
        metric="price_feeds_live",
        severity="critical",
        message="no live price feed: the price is {price_age_s:.0f} s old; price rules are paused",
        below=1.0,
        for_=1 * _MIN,
        repeat=1 * _HOUR,
    ),
    RuleConfig(
        name="block-gap",
        metric="tip_age_s",
        severity="warning",
        message="no block for {value:.0f} s; chance of a gap this long by luck: "
        "{block_gap_probability:.2g}",
        above=5400.0,
        repeat=30 * _MIN,
    ),
    RuleConfig(
        name="hash-ribbon-capitulation",
        metric="hash_ribbon_30_60",
        severity="info",
        message="hash-ribbon capitulation: SMA30/SMA60 of daily hashrate {value:.3f}",
        below=1.0,
    ),
)
