"""THE feature registry: every feature the service stores, serves, logs and trains on.

Everything else derives from this file: the Redis value layout (features/online_store.py),
the online read (stages/hydrators), the training-set columns and the model's feature order
(offline/), and the served-feature log schema. Change a group here and its Redis keys change
with it (the group fingerprint is part of the key), so old and new layouts never mix.
"""

from __future__ import annotations

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
"""The catalog's top-level taxonomy; an item's category is its index in this tuple."""

DAY_S = 86_400.0

USER = FeatureGroup(
    name="user",
    entity="user_id",
    max_age_s=2 * DAY_S,
    description="Behavioural profile of a user, from their interaction history.",
    features=(
        Feature("u_events_7d", "interactions in the last 7 days"),
        Feature("u_events_30d", "interactions in the last 30 days"),
        Feature("u_events_total", "interactions ever"),
        Feature("u_purchases_30d", "purchases in the last 30 days"),
        Feature("u_purchase_rate", "purchases / interactions, all time"),
        Feature("u_days_since_last_event", "days since the last interaction", default=365.0),
        Feature("u_account_age_days", "days since sign-up"),
        Feature("u_distinct_items", "distinct items interacted with"),
        Feature("u_distinct_categories", "distinct categories interacted with"),
        Feature("u_category_entropy", "entropy (nats) of the user's category distribution"),
        Feature("u_avg_price", "mean price of interacted items", default=30.0),
        Feature("u_std_price", "std of price of interacted items", default=20.0),
        Feature("u_top_category_share", "share of interactions in the user's top category"),
        Feature(
            "u_category_share",
            "share of interactions per category (recency-weighted)",
            size=len(CATEGORIES),
        ),
    ),
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
        Feature("i_price", "price in major units", default=30.0),
        Feature("i_log_price", "log1p(price)", default=3.4),
        Feature("i_stock", "units in stock (0 = out of stock)", default=0.0),
        Feature("i_category", "category index into CATEGORIES", default=-1.0, categorical=True),
        Feature("i_age_days", "days since the item was listed"),
        Feature("i_events_7d", "interactions in the last 7 days"),
        Feature("i_events_30d", "interactions in the last 30 days"),
        Feature("i_events_total", "interactions ever"),
        Feature("i_purchases_30d", "purchases in the last 30 days"),
        Feature("i_purchase_rate", "purchases / interactions, all time"),
        Feature("i_distinct_users_30d", "distinct users in the last 30 days"),
        Feature("i_days_since_last_event", "days since the last interaction", default=365.0),
        Feature("i_trend", "events_7d / (events_30d / 4 + 1): >1 means rising"),
        Feature("i_popularity_pct", "popularity percentile over the catalog, 30 days (1 = top)"),
        Feature("i_category_popularity_pct", "popularity percentile within its category"),
        Feature("i_price_pct_in_category", "price percentile within its category", default=0.5),
    ),
)

USER_ITEM = OnDemandGroup(
    name="user_item",
    inputs=("user", "user_embedding", "item", "item_embedding"),
    description="Cross features of (user, candidate item); see features/on_demand.py.",
    features=(
        Feature("x_emb_dot", "dot product of user and item embeddings"),
        Feature("x_emb_cosine", "cosine similarity of user and item embeddings"),
        Feature("x_category_share", "user's share of interactions in the item's category"),
        Feature("x_category_rank", "rank of the item's category for the user (0 = top)", default=20.0),
        Feature("x_price_ratio", "item price / user's mean price", default=1.0),
        Feature("x_price_z", "(item price - user's mean price) / user's price std"),
    ),
)

REGISTRY = FeatureRegistry(groups=(USER, USER_EMBEDDING, ITEM), on_demand=(USER_ITEM,))

RECOMMENDATION_MODEL_FEATURES: tuple[str, ...] = tuple(
    [c for c in USER.columns if not c.startswith("u_category_share_")] + ITEM.columns + USER_ITEM.columns
)
"""Default feature order of the ranking model: user scalars, item features, cross features."""
