"""The synthetic project's features: every feature the service stores, serves, logs and trains on
for the synthetic shop, checkout and payments worlds (offline/simulation/).

Loaded as ``decision_service.features.definitions`` when this project is active
(decision_service/project.py). Everything else derives from this file: the packed value layout
(features/packed.py), the online read (stages/hydrators), the training-set columns, the model's
feature order
(offline/), and the served-feature log schema. Change a group here and its Redis keys change
with it (the group fingerprint is part of the key), so old and new layouts never mix.
"""

from __future__ import annotations

from decision_service.features.cross import (
    CategoryRank,
    CategoryShare,
    EmbeddingCosine,
    EmbeddingDot,
    RatioOf,
    ZScoreOf,
)
from decision_service.features.declarative import (
    Attribute,
    Count,
    DistinctCount,
    Entropy,
    Events,
    Expr,
    FirstSeenCount,
    GroupSource,
    Lookup,
    Mean,
    PercentileInGroup,
    Ratio,
    Share,
    Std,
    Table,
    Time,
    TimeSinceAttribute,
    TimeSinceFirst,
    TimeSinceLast,
    TopShare,
)
from decision_service.features.interactions import Interactions
from decision_service.features.registry import Feature, FeatureGroup, FeatureRegistry, OnDemandGroup, Reason

EMBEDDING_DIM = 64
"""Width of user and item embeddings (FAISS index dimension)."""

CATEGORIES: tuple[str, ...] = (
    "books",
    "music",
    "movies",
    "games",
    "electronics",
    "computers",
    "phones",
    "cameras",
    "home",
    "kitchen",
    "garden",
    "tools",
    "toys",
    "baby",
    "beauty",
    "health",
    "fashion",
    "shoes",
    "sports",
    "grocery",
)
"""The category vocabulary: an item's category is its index in this tuple (i_category); the
simulator draws items over its 20 entries (offline/simulation/world.py N_CATEGORIES)."""

DAY_S = 86_400.0

# The shop's sources (a world directory of offline/simulation/world.py; paths are relative to
# it): what USER and ITEM are computed from (offline/features/compiler.py).
SHOP_USERS = Table("users", "users.parquet", key="user_id")
SHOP_ITEMS = Table("items", "items.parquet", key="item_id")
SHOP_EVENTS = Events(
    "interactions",
    "interactions.parquet",
    Time("ts_ms", "ms"),
    keys={"user_id": "user_id", "item_id": "item_id"},
    event_type="event",
    event_types=("click", "purchase"),
    lookups=(Lookup(SHOP_ITEMS, on="item_id", columns=("category", "price")),),
)
PURCHASE = ("purchase",)
INTERACTIONS = Interactions(
    events=SHOP_EVENTS,
    users=SHOP_USERS,
    items=SHOP_ITEMS,
    positive=PURCHASE,
    category="category",
    price="price",
    stock="stock",
    listed=Time("listed_ms", "ms"),
    signup=Time("signup_ms", "ms"),
)
"""What the recommendation jobs train on (decision_service/features/interactions.py)."""
LISTED = "listed_ms < t"  # an item exists in the catalog from its listing on

USER = FeatureGroup(
    name="user",
    entity="user_id",
    max_age_s=2 * DAY_S,
    description="Behavioural profile of a user, from their interaction history.",
    features=(
        Feature("u_events_7d", "interactions in the last 7 days", compute=Count("7d")),
        Feature("u_events_30d", "interactions in the last 30 days", compute=Count("30d")),
        Feature("u_events_total", "interactions ever", compute=Count()),
        Feature("u_purchases_30d", "purchases in the last 30 days", compute=Count("30d", PURCHASE)),
        Feature(
            "u_purchase_rate",
            "purchases / interactions, all time",
            compute=Ratio(Count(where=PURCHASE), Count()),
        ),
        Feature(
            "u_days_since_last_event",
            "days since the last interaction",
            default=365.0,
            compute=TimeSinceLast(),
        ),
        Feature("u_account_age_days", "days since sign-up", compute=TimeSinceAttribute("signup_ms")),
        Feature("u_distinct_items", "distinct items interacted with", compute=DistinctCount(of="item_id")),
        Feature(
            "u_distinct_categories",
            "distinct categories interacted with",
            compute=DistinctCount(of="category"),
        ),
        Feature(
            "u_category_entropy",
            "entropy (nats) of the user's category distribution",
            compute=Entropy(of="category"),
        ),
        Feature("u_avg_price", "mean price of interacted items", default=30.0, compute=Mean(of="price")),
        Feature("u_std_price", "std of price of interacted items", default=20.0, compute=Std(of="price")),
        Feature(
            "u_top_category_share",
            "share of interactions in the user's top category",
            compute=TopShare(of="category"),
        ),
        Feature(
            "u_category_share",
            "share of interactions per category (recency-weighted)",
            size=len(CATEGORIES),
            compute=Share(of="category", vocabulary=tuple(range(len(CATEGORIES))), half_life="14d"),
        ),
    ),
    source=GroupSource(events=SHOP_EVENTS, table=SHOP_USERS),
)

USER_EMBEDDING = FeatureGroup(
    name="user_embedding",
    entity="user_id",
    max_age_s=7 * DAY_S,
    description="User embedding from implicit matrix factorisation; the ANN query vector.",
    features=(Feature("user_embedding", "latent taste vector", size=EMBEDDING_DIM),),
)

ITEM = FeatureGroup(
    name="item",
    entity="item_id",
    max_age_s=2 * DAY_S,
    description="Catalog attributes and popularity of an item.",
    features=(
        Feature("i_price", "price in major units", default=30.0, compute=Attribute("price")),
        Feature("i_log_price", "log1p(price)", default=3.4, compute=Expr("ln(1 + i_price)")),
        Feature("i_stock", "units in stock (0 = out of stock)", default=0.0, compute=Attribute("stock")),
        Feature(
            "i_category",
            "category index into CATEGORIES",
            default=-1.0,
            categorical=True,
            compute=Attribute("category"),
        ),
        Feature("i_age_days", "days since the item was listed", compute=TimeSinceAttribute("listed_ms")),
        Feature("i_events_7d", "interactions in the last 7 days", compute=Count("7d")),
        Feature("i_events_30d", "interactions in the last 30 days", compute=Count("30d")),
        Feature("i_events_total", "interactions ever", compute=Count()),
        Feature("i_purchases_30d", "purchases in the last 30 days", compute=Count("30d", PURCHASE)),
        Feature(
            "i_purchase_rate",
            "purchases / interactions, all time",
            compute=Ratio(Count(where=PURCHASE), Count()),
        ),
        Feature(
            "i_distinct_users_30d",
            "distinct users in the last 30 days",
            compute=DistinctCount("30d", of="user_id"),
        ),
        Feature(
            "i_days_since_last_event",
            "days since the last interaction",
            default=365.0,
            compute=TimeSinceLast(),
        ),
        Feature(
            "i_trend",
            "events_7d / (events_30d / 4 + 1): >1 means rising",
            compute=Expr("i_events_7d / (i_events_30d / 4 + 1)"),
        ),
        Feature(
            "i_popularity_pct",
            "popularity percentile over the catalog, 30 days (1 = top)",
            compute=PercentileInGroup("i_events_30d", among=LISTED, otherwise=0.0),
        ),
        Feature(
            "i_category_popularity_pct",
            "popularity percentile within its category",
            compute=PercentileInGroup("i_events_30d", by="i_category", among=LISTED, otherwise=0.0),
        ),
        Feature(
            "i_price_pct_in_category",
            "price percentile within its category",
            default=0.5,
            compute=PercentileInGroup("i_price", by="i_category", among=LISTED),
        ),
    ),
    source=GroupSource(events=SHOP_EVENTS, table=SHOP_ITEMS),
)

USER_ITEM = OnDemandGroup(
    name="user_item",
    inputs=("user", "user_embedding", "item", "item_embedding"),
    description="Cross features of (user, candidate item); features/cross.py, features/on_demand.py.",
    features=(
        Feature("x_emb_dot", "dot product of user and item embeddings", compute=EmbeddingDot()),
        Feature("x_emb_cosine", "cosine similarity of user and item embeddings", compute=EmbeddingCosine()),
        Feature(
            "x_category_share",
            "user's share of interactions in the item's category",
            compute=CategoryShare("u_category_share", "i_category"),
        ),
        Feature(
            "x_category_rank",
            "rank of the item's category for the user (0 = top)",
            default=20.0,
            compute=CategoryRank("u_category_share", "i_category"),
        ),
        Feature(
            "x_price_ratio",
            "item price / user's mean price",
            default=1.0,
            compute=RatioOf("i_price", "u_avg_price"),
        ),
        Feature(
            "x_price_z",
            "(item price - user's mean price) / user's price std",
            compute=ZScoreOf("i_price", "u_avg_price", "u_std_price"),
        ),
    ),
)

# ------------------------------------------------------------------------------- fraud
# Profiles are point-in-time aggregates over a party's past transactions (offline/features/fraud_features.py
# computes them for training rows and for materialization with the same code; the declared
# ``compute``s below reproduce them through offline/features/compiler.py, checked by
# tests/offline/test_fraud_feature_parity.py). Velocity is read fresh from Redis per request;
# request and neighbour features are computed at request time (features/fraud.py). Each
# feature names the reason code it maps to in explanations.

# The payments world's sources (a world directory of offline/simulation/fraud_world.py; paths
# are relative to it). Windows are [t - w, t): ``closed="left"``, an event exactly w old still
# counts, as in the hand-written profiles (and the velocity counters).
ISO_ALPHA2: tuple[str, ...] = tuple(chr(65 + i // 26) + chr(65 + i % 26) for i in range(26 * 26))
"""Every two-letter code "AA".."ZZ" in order: a country's index here is features.fraud.country_code."""

PAY_USERS = Table("users", "users.parquet", key="user_id", derived={"home_alpha2": "upper(home)"})
PAY_MERCHANTS = Table("merchants", "merchants.parquet", key="merchant_id")
PAY_DEVICES = Table("devices", "devices.parquet", key="device_id")
PAY_CURRENCIES = Table("currencies", "currencies.parquet", key="currency")  # features.fraud.CURRENCIES
PAY_TRANSACTIONS = Events(
    "transactions",
    "transactions.parquet",
    Time("occurred_ms", "ms"),
    keys={"user_id": "user_id", "merchant_id": "merchant_id", "device_id": "device_id"},
    lookups=(
        Lookup(PAY_CURRENCIES, on="currency", columns=("exponent", "eur_rate")),
        Lookup(PAY_USERS, on="user_id", columns=("home",)),  # the cardholder's home country
    ),
    derived={
        "amount_eur": "amount_minor / pow(10, exponent) * eur_rate",  # features.fraud.amount_eur
        "log_amount_eur": "ln(1 + amount_eur)",
        "abroad": "CAST(country <> home AS DOUBLE)",
        "chargeback_at": "CASE WHEN chargeback_ms >= 0 THEN chargeback_ms END",  # -1: none (yet)
    },
)
CHARGEBACKS_90D = Count("90d", time="chargeback_at", closed="left")  # by arrival, not payment
M_CHARGEBACK_PRIOR = 0.01

VELOCITY_WINDOWS: tuple[tuple[str, int], ...] = (("10m", 600), ("1h", 3_600), ("24h", 86_400))
"""Velocity windows (label, seconds) of the per-user and per-device counters."""

_ACCOUNT = Reason(
    "ACCOUNT_AGE", "account age is unusual for legitimate buyers", "ACCOUNT_NEW", "the account is new"
)
_USER_HISTORY = Reason(
    "USER_HISTORY_UNUSUAL",
    "unusual purchase history",
    "USER_LITTLE_HISTORY",
    "the user has little purchase history",
)
_MERCHANT = Reason("MERCHANT_HIGH_RISK", "the merchant has a high chargeback rate")
_MERCHANT_PROFILE = Reason(
    "MERCHANT_PROFILE", "merchant profile typical of fraud", "MERCHANT_NEW", "the merchant has little history"
)
_DEVICE_NEW = Reason(
    "DEVICE_AGE", "device age typical of fraud", "DEVICE_NEW", "the device was first seen recently"
)
_USER_VELOCITY = Reason("USER_VELOCITY_HIGH", "many recent transactions by this user")
_DEVICE_VELOCITY = Reason("DEVICE_VELOCITY_HIGH", "many recent transactions from this device")

FRAUD_USER = FeatureGroup(
    name="fraud_user",
    entity="user_id",
    max_age_s=2 * DAY_S,
    description="Payment profile of a user: account age, usual amounts, home country, chargebacks.",
    features=(
        Feature(
            "fu_account_age_days",
            "days since sign-up",
            default=0.0,
            reason=_ACCOUNT,
            compute=TimeSinceAttribute("signup_ms"),
        ),
        Feature(
            "fu_txn_count_30d",
            "transactions in the last 30 days",
            reason=_USER_HISTORY,
            compute=Count("30d", closed="left"),
        ),
        Feature(
            "fu_txn_count_total",
            "transactions ever",
            reason=_USER_HISTORY,
            compute=Count(),
        ),
        Feature(
            "fu_amount_mean_log",
            "mean log1p(amount EUR) of past transactions",
            default=3.4,
            compute=Mean(of="log_amount_eur"),
            reason=Reason("USER_AMOUNT_PROFILE", "the user's usual amounts are typical of fraud"),
        ),
        Feature(
            "fu_amount_std_log",
            "std of log1p(amount EUR) of past transactions",
            default=0.6,
            compute=Std(of="log_amount_eur", min_count=2),  # one transaction: the default
            reason=Reason("USER_AMOUNT_PROFILE", "the user's usual amounts are typical of fraud"),
        ),
        Feature(
            "fu_home_country",
            "home country (features.fraud.country_code)",
            default=-1.0,
            categorical=True,
            compute=Attribute("home_alpha2", vocabulary=ISO_ALPHA2),
        ),
        Feature(
            "fu_foreign_share",
            "share of past transactions outside the home country",
            compute=Mean(of="abroad"),
            reason=Reason(
                "USER_TRAVEL_PROFILE",
                "the user's travel pattern is unusual",
                "USER_RARELY_ABROAD",
                "the user rarely pays abroad",
            ),
        ),
        Feature(
            "fu_new_devices_30d",
            "devices first used by the user in the last 30 days",
            compute=FirstSeenCount("30d", of="device_id", closed="left"),
            reason=Reason("USER_MANY_NEW_DEVICES", "the user switched devices often recently"),
        ),
        Feature(
            "fu_chargebacks_90d",
            "chargebacks received in the last 90 days",
            compute=CHARGEBACKS_90D,
            reason=Reason("USER_PRIOR_CHARGEBACKS", "the user had recent chargebacks"),
        ),
        Feature(
            "fu_days_since_last_txn",
            "days since the previous transaction",
            default=365.0,
            compute=TimeSinceLast(),
            reason=Reason(
                "USER_DORMANT",
                "first transaction after a long pause",
                "USER_RAPID_REPEAT",
                "transactions in quick succession",
            ),
        ),
    ),
    source=GroupSource(PAY_TRANSACTIONS, PAY_USERS),
)

MERCHANT = FeatureGroup(
    name="merchant",
    entity="merchant_id",
    max_age_s=2 * DAY_S,
    description="Risk profile of a merchant.",
    features=(
        Feature(
            "m_txn_count_30d",
            "transactions in the last 30 days",
            reason=_MERCHANT_PROFILE,
            compute=Count("30d", closed="left"),
        ),
        Feature(
            "m_chargeback_rate_90d",
            "chargebacks / transactions over 90 days (smoothed)",
            default=M_CHARGEBACK_PRIOR,
            reason=_MERCHANT,
            # (chargebacks + 20 * prior) / (transactions + 20): 20 pseudo-transactions at the prior
            compute=Ratio(
                CHARGEBACKS_90D, Count("90d", closed="left"), prior=M_CHARGEBACK_PRIOR, prior_weight=20
            ),
        ),
        Feature(
            "m_amount_mean_log",
            "mean log1p(amount EUR) at the merchant",
            default=3.4,
            reason=_MERCHANT_PROFILE,
            compute=Mean(of="log_amount_eur"),
        ),
        Feature(
            "m_age_days",
            "days since the merchant's first transaction",
            reason=_MERCHANT_PROFILE,
            compute=TimeSinceFirst(),
        ),
    ),
    source=GroupSource(PAY_TRANSACTIONS, PAY_MERCHANTS),
)

DEVICE = FeatureGroup(
    name="device",
    entity="device_id",
    max_age_s=2 * DAY_S,
    description="History of a device across all users.",
    features=(
        Feature(
            "d_age_days",
            "days since the device was first seen (0 = never seen)",
            reason=_DEVICE_NEW,
            compute=TimeSinceFirst(),
        ),
        Feature(
            "d_txn_count_30d",
            "transactions in the last 30 days",
            reason=_DEVICE_VELOCITY,
            compute=Count("30d", closed="left"),
        ),
        Feature(
            "d_new_users_30d",
            "users who first used the device in the last 30 days",
            reason=Reason("DEVICE_SHARED", "the device is used by several accounts"),
            compute=FirstSeenCount("30d", of="user_id", closed="left"),
        ),
        Feature(
            "d_chargebacks_90d",
            "chargebacks on the device's transactions over 90 days",
            reason=Reason("DEVICE_PRIOR_CHARGEBACKS", "the device is linked to chargebacks"),
            compute=CHARGEBACKS_90D,
        ),
    ),
    source=GroupSource(PAY_TRANSACTIONS, PAY_DEVICES),
)


def _velocity_features(entity: str, reason: Reason) -> tuple[Feature, ...]:
    out = []
    for label, _ in VELOCITY_WINDOWS:
        out.append(
            Feature(
                f"v_{entity}_count_{label}", f"{entity}'s transactions in the last {label}", reason=reason
            )
        )
        out.append(
            Feature(f"v_{entity}_sum_{label}", f"{entity}'s amount (EUR) in the last {label}", reason=reason)
        )
    return tuple(out)


VELOCITY = OnDemandGroup(
    name="velocity",
    inputs=("txn_events:user", "txn_events:device"),
    description="Counts and sums of a user's and a device's earlier transactions per window; "
    "read fresh per request from Redis event sets (features/redis_store.py).",
    features=_velocity_features("user", _USER_VELOCITY) + _velocity_features("device", _DEVICE_VELOCITY),
)

FRAUD_REQUEST = OnDemandGroup(
    name="fraud_request",
    inputs=("request", "fraud_user", "merchant", "user_devices"),
    description="Features of the transaction itself, relative to the user and merchant profiles.",
    features=(
        Feature(
            "r_amount_log",
            "log1p(amount in EUR)",
            reason=Reason(
                "AMOUNT_HIGH",
                "large amount",
                "AMOUNT_VERY_SMALL",
                "very small amount, typical of card testing",
            ),
        ),
        Feature(
            "r_amount_z_user",
            "(log amount - user's mean) / user's std",
            reason=Reason(
                "AMOUNT_HIGH_FOR_USER",
                "amount far above the user's usual",
                "AMOUNT_LOW_FOR_USER",
                "amount far below the user's usual",
            ),
        ),
        Feature(
            "r_amount_vs_merchant",
            "log amount - merchant's mean log amount",
            reason=Reason(
                "AMOUNT_HIGH_FOR_MERCHANT",
                "amount unusual for this merchant",
                "AMOUNT_LOW_FOR_MERCHANT",
                "amount unusually low for this merchant",
            ),
        ),
        Feature(
            "r_new_device",
            "1 if the user never used this device before",
            reason=Reason("NEW_DEVICE", "first transaction of this user on this device"),
        ),
        Feature(
            "r_foreign_country",
            "1 if the country differs from the user's home country",
            reason=Reason("FOREIGN_COUNTRY", "transaction country differs from the home country"),
        ),
        Feature(
            "r_hour_of_day",
            "hour of day (UTC) of occurred_at",
            reason=Reason("UNUSUAL_HOUR", "time of day typical of fraud"),
        ),
        Feature(
            "r_channel",
            "channel (decision.v1.Channel number)",
            categorical=True,
            reason=Reason("CHANNEL_RISK", "channel typical of fraud"),
        ),
    ),
)

FRAUD_NEIGHBOURS = OnDemandGroup(
    name="fraud_neighbours",
    inputs=("fraud model matrix", "neighbour index"),
    description="FAISS k nearest labelled past transactions (matured labels) of this transaction.",
    features=(
        Feature(
            "nn_fraud_rate",
            "chargeback rate among the k most similar labelled transactions",
            default=0.02,
            reason=Reason("SIMILAR_TO_FRAUD", "similar past transactions were fraud"),
        ),
        Feature(
            "nn_mean_distance",
            "mean distance to those neighbours (standardized units)",
            default=1.0,
            reason=Reason("UNUSUAL_PATTERN", "unlike most past transactions"),
        ),
    ),
)

FRAUD_NEIGHBOUR_COLUMNS: tuple[str, ...] = (
    "r_amount_log",
    "r_amount_z_user",
    "r_new_device",
    "r_foreign_country",
    "v_user_count_1h",
    "v_device_count_24h",
    "m_chargeback_rate_90d",
    "fu_account_age_days",
    "d_new_users_30d",
    "d_chargebacks_90d",
)
"""The space neighbours are searched in (standardized; log1p on counts)."""

REGISTRY = FeatureRegistry(
    groups=(USER, USER_EMBEDDING, ITEM, FRAUD_USER, MERCHANT, DEVICE),
    on_demand=(USER_ITEM, VELOCITY, FRAUD_REQUEST, FRAUD_NEIGHBOURS),
)

RECOMMENDATION_MODEL_FEATURES: tuple[str, ...] = tuple(
    [c for c in USER.columns if not c.startswith("u_category_share_")] + ITEM.columns + USER_ITEM.columns
)
"""Default feature order of the ranking model: user scalars, item features, cross features."""

FRAUD_MODEL_FEATURES: tuple[str, ...] = tuple(
    [c for c in FRAUD_USER.columns if c != "fu_home_country"]
    + MERCHANT.columns
    + DEVICE.columns
    + VELOCITY.columns
    + FRAUD_REQUEST.columns
    + FRAUD_NEIGHBOURS.columns
)
"""Default feature order of the fraud model."""
