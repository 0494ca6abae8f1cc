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
    TimeSinceLast,
    TopShare,
)
from decision_service.features.interactions import Interactions
from decision_service.features.payments import Payments, fraud_features
from decision_service.features.registry import Feature, FeatureGroup, FeatureRegistry, OnDemandGroup

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
# The payments world's table (offline/simulation/fraud_world.py; paths are relative to the
# world directory) declared as the fraud contract (decision_service/features/payments.py),
# which builds the standard fraud groups from it: party profiles as point-in-time aggregates
# (compiled by offline/features/compiler.py for training rows and for materialization alike;
# tests/offline/test_fraud_feature_parity.py checks them against a hand-written oracle),
# velocity read fresh from Redis per request, request and neighbour features at request time
# (features/fraud.py). This world has every optional column, so nothing is left out.
PAY_USERS = Table("users", "users.parquet", key="user_id")
PAYMENTS = Payments(
    Events(
        "transactions",
        "transactions.parquet",
        Time("occurred_ms", "ms"),
        keys={"user_id": "user_id", "merchant_id": "merchant_id", "device_id": "device_id"},
        derived={"charged_back": "chargeback_ms >= 0"},  # -1: no chargeback (yet)
    ),
    transaction_id="txn_id",
    amount="amount_minor",
    amount_unit="minor",
    currency="currency",
    label="charged_back",
    label_time=Time("chargeback_ms", "ms"),  # labels count by their arrival, not the payment
    country="country",
    channel="channel",
    users=PAY_USERS,
    signup=Time("signup_ms", "ms"),
    home_country="home",
    merchants=Table("merchants", "merchants.parquet", key="merchant_id"),
    devices=Table("devices", "devices.parquet", key="device_id"),
)
FRAUD = fraud_features(PAYMENTS)
"""FRAUD_USER, MERCHANT, DEVICE, VELOCITY, FRAUD_REQUEST, FRAUD_NEIGHBOURS, FRAUD_MODEL_FEATURES
(exported under those names by decision_service.features.definitions)."""
FRAUD_USER, MERCHANT, DEVICE = FRAUD.user, FRAUD.merchant, FRAUD.device

REGISTRY = FeatureRegistry(
    groups=(USER, USER_EMBEDDING, ITEM) + FRAUD.groups,
    on_demand=(USER_ITEM,) + FRAUD.on_demand,
)

RECOMMENDATION_MODEL_FEATURES: tuple[str, ...] = tuple(
    [c for c in USER.columns if not c.startswith("u_category_share_")] + ITEM.columns + USER_ITEM.columns
)
"""Default feature order of the ranking model: user scalars, item features, cross features."""
