"""``decision-service init DIR [--template shop|payments]``: a commented example project that
validates and bootstraps as is.

shop (recommendations): project.yaml, features.py (sources, feature groups, the
recommendation contract), and a small generated sample shop under data/ (CSV: users, items
with free-form category names, click / purchase events over 60 days).
payments (fraud verdicts): project.yaml, features.py (the payments contract over a minimal
table, its optional columns commented) and data/payments.csv (a generated payments world's
minimal export: ~43k payments of 1,500 customers over 60 days).

A newcomer can run validate and bootstrap at once, then point the sources at their own files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROJECT_YAML = """\
# A decision-service project (https://github.com/... README "Bring your own data").
# Every key is optional except name and use_cases.
name: {name}
description: a sample shop to start from; point features.py at your own files
# the use cases this project serves: recommendation | fraud | conversion
use_cases: [recommendation]
# where the sources' relative paths (features.py) start
data: data
# model registry and decision logs (defaults: .ds/registry, .ds/logs in this folder)
# registry: .ds/registry
# logs: .ds/logs            # or s3://bucket/prefix
# the online store `serve` and `materialize` use (or pass --redis-url)
# online_store: redis://<host>:<port>/0
engine: duckdb
settings:
  recommendation:
    # time-ordered split: features as of the point by which 60 % of the events happened; the
    # ranker learns the positives up to 80 %, and is evaluated on those after (or *_day: days)
    train_from_share: 0.6
    test_from_share: 0.8
    eval_at: 10
"""

FEATURES_PY = '''\
"""Sources and features of this project: edit the paths and columns to match your files.

Sources (decision_service/features/declarative.py): a Table has one row per entity, Events
one row per event; paths are relative to project.yaml's ``data`` folder; ``derived`` columns
are DuckDB SQL over the row (rename a column, cast it, compute an event type).
"""

from decision_service.features.cross import CategoryRank, CategoryShare, EmbeddingCosine, EmbeddingDot, RatioOf
from decision_service.features.declarative import (
    Attribute, Count, DistinctCount, Entropy, Events, GroupSource, Lookup, Mean, PercentileInGroup, Ratio,
    Share, Std, Table, Time, TimeSinceAttribute, TimeSinceLast,
)
from decision_service.features.interactions import Interactions
from decision_service.features.registry import Feature, FeatureGroup, FeatureRegistry, OnDemandGroup
from offline.features.vocabulary import index_sql, learned

EMBEDDING_DIM = 16  # width of the user / item embeddings (FAISS index dimension)

# Free-form category names (any strings): the vocabulary is learned from the data on first use
# and stored in .ds/vocabularies/category.json; an item's category is its index in it.
_ITEMS = Table("items", "items.csv", key="item_id", format="csv")
CATEGORIES = learned("category", _ITEMS, "category")
SHARE_CATEGORIES = min(len(CATEGORIES), 32)

USERS = Table("users", "users.csv", key="user_id", format="csv")
ITEMS = Table(
    "items", "items.csv", key="item_id", format="csv",
    derived={"category_index": index_sql("category", CATEGORIES)},
)
EVENTS = Events(
    "events", "events.csv", Time("ts", "timestamp", timezone="UTC"),  # ISO timestamps
    keys={"user_id": "user_id", "item_id": "item_id"},
    event_type="event", event_types=("click", "purchase"), format="csv",
    lookups=(Lookup(ITEMS, on="item_id", columns=("category_index", "price")),),
)
PURCHASE = ("purchase",)

# What recommendation training reads: who did what with which item, and the goal event.
INTERACTIONS = Interactions(
    events=EVENTS, users=USERS, items=ITEMS, positive=PURCHASE, category="category_index",
    price="price", stock="stock",
)

USER = FeatureGroup(
    name="user", entity="user_id", max_age_s=2 * 86_400,
    description="A shopper's activity and taste.",
    features=(
        Feature("u_events_7d", "events in the last 7 days", compute=Count("7d")),
        Feature("u_events_total", "events ever", compute=Count()),
        Feature("u_purchase_rate", "purchases / events", compute=Ratio(Count(where=PURCHASE), Count())),
        Feature("u_days_since_last_event", "days since the last event", default=365.0, compute=TimeSinceLast()),
        Feature("u_account_age_days", "days since sign-up", compute=TimeSinceAttribute("signup_at", column_unit="timestamp")),
        Feature("u_distinct_categories", "distinct categories", compute=DistinctCount(of="category_index")),
        Feature("u_category_entropy", "entropy of categories (nats)", compute=Entropy(of="category_index")),
        Feature("u_avg_price", "mean price of items", default=30.0, compute=Mean(of="price")),
        Feature("u_std_price", "std of prices", default=20.0, compute=Std(of="price")),
        # one slot per category: the most frequent SHARE_CATEGORIES (a vector per user; keep it small)
        Feature("u_category_share", "share of events per category", size=SHARE_CATEGORIES,
                compute=Share(of="category_index", vocabulary=tuple(range(SHARE_CATEGORIES)), half_life="14d")),
    ),
    source=GroupSource(events=EVENTS, table=USERS),
)
USER_EMBEDDING = FeatureGroup(
    name="user_embedding", entity="user_id", max_age_s=7 * 86_400,
    description="User embedding (implicit matrix factorisation, built in).",
    features=(Feature("user_embedding", "latent taste vector", size=EMBEDDING_DIM),),
)
ITEM = FeatureGroup(
    name="item", entity="item_id", max_age_s=2 * 86_400,
    description="An item's attributes and popularity.",
    features=(
        Feature("i_price", "price", default=30.0, compute=Attribute("price")),
        Feature("i_stock", "units in stock (0 = out of stock: filtered)", compute=Attribute("stock")),
        Feature("i_category", "category index", default=-1.0, categorical=True, compute=Attribute("category", vocabulary=CATEGORIES)),
        Feature("i_events_7d", "events in the last 7 days", compute=Count("7d")),
        Feature("i_events_30d", "events in the last 30 days", compute=Count("30d")),
        Feature("i_purchase_rate", "purchases / events", compute=Ratio(Count(where=PURCHASE), Count())),
        Feature("i_popularity_pct", "popularity percentile (1 = top)", compute=PercentileInGroup("i_events_30d")),
    ),
    source=GroupSource(events=EVENTS, table=ITEMS),
)
USER_ITEM = OnDemandGroup(
    name="user_item", inputs=("user", "user_embedding", "item", "item_embedding"),
    description="Cross features of (user, candidate item).",
    features=(
        Feature("x_emb_dot", "embedding dot product", compute=EmbeddingDot()),
        Feature("x_emb_cosine", "embedding cosine", compute=EmbeddingCosine()),
        Feature("x_category_share", "user's share of the item's category",
                compute=CategoryShare("u_category_share", "i_category")),
        Feature("x_category_rank", "rank of the item's category for the user", default=float(len(CATEGORIES)),
                compute=CategoryRank("u_category_share", "i_category")),
        Feature("x_price_ratio", "price / user's mean price", default=1.0, compute=RatioOf("i_price", "u_avg_price")),
    ),
)
REGISTRY = FeatureRegistry(groups=(USER, USER_EMBEDDING, ITEM), on_demand=(USER_ITEM,))
RECOMMENDATION_MODEL_FEATURES = tuple(
    [c for c in USER.columns if not c.startswith("u_category_share_")] + ITEM.columns + USER_ITEM.columns
)
'''

GITIGNORE = "# derived state: vocabularies, serving state, registry, logs\n.ds/\n"

_CATEGORY_NAMES = ("Bücher", "Musik", "jeux vidéo", "Küche", "garden & patio", "toys", "beauty", "sports")


def _sample(data: Path, seed: int = 7) -> None:
    """A small shop: 400 users, 300 items, ~20k events over 60 days (ISO timestamps)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_users, n_items, days = 400, 300, 60
    start = np.datetime64("2026-01-01T00:00:00", "s")
    cat = rng.integers(0, len(_CATEGORY_NAMES), n_items)
    price = np.round(rng.lognormal(3.2, 0.6, n_items), 2)
    stock = np.where(rng.random(n_items) < 0.05, 0, rng.integers(1, 100, n_items))
    pacsv.write_csv(
        pa.table(
            {
                "item_id": [f"sku-{i:04d}" for i in range(n_items)],
                # three items have no category (served, but never through a category allow-list)
                "category": [_CATEGORY_NAMES[c] if i >= 3 else None for i, c in enumerate(cat)],
                "price": price,
                "stock": stock,
            }
        ),
        data / "items.csv",
    )
    signup = start - rng.integers(0, 365 * 86_400, n_users).astype("timedelta64[s]")
    pacsv.write_csv(
        pa.table(
            {
                "user_id": [f"user-{u:04d}" for u in range(n_users)],
                "signup_at": pa.array(signup.astype("datetime64[s]")),
            }
        ),
        data / "users.csv",
    )
    favourite = rng.integers(0, len(_CATEGORY_NAMES), n_users)
    quality = rng.pareto(1.5, n_items) + 0.1
    n = 20_000
    user = rng.integers(0, n_users, n)
    in_favourite = rng.random(n) < 0.7
    item = np.empty(n, np.int64)
    for u_cat in range(len(_CATEGORY_NAMES)):
        pool = np.flatnonzero(cat == u_cat)
        pick = in_favourite & (favourite[user] == u_cat)
        item[pick] = rng.choice(pool, pick.sum(), p=quality[pool] / quality[pool].sum())
    rest = ~in_favourite
    item[rest] = rng.choice(n_items, rest.sum(), p=quality / quality.sum())
    ts = start + np.sort(rng.integers(0, days * 86_400, n)).astype("timedelta64[s]")
    event = np.where(rng.random(n) < 0.12 + 0.1 * (cat[item] == favourite[user]), "purchase", "click")
    pacsv.write_csv(
        pa.table(
            {
                "user_id": [f"user-{u:04d}" for u in user],
                "item_id": [f"sku-{i:04d}" for i in item],
                "ts": pa.array(ts.astype("datetime64[s]")),
                "event": event,
            }
        ),
        data / "events.csv",
    )


PAYMENTS_YAML = """\
# A decision-service project (README "Bring your own data", "The payments contract").
name: {name}
description: fraud verdicts from a payments table; point features.py at your own file
use_cases: [fraud]
# where the sources' relative paths (features.py) start
data: data
# model registry and decision logs (defaults: .ds/registry, .ds/logs in this folder)
# online_store: redis://<host>:<port>/0   # the store `serve` and `materialize` use (or --redis-url)
engine: duckdb
settings:
  fraud:
    # days after the first payment's day that only build history (profiles need a past)
    train_start_day: 20
    # the last days are held out: the model is judged on them against the rules-only baseline
    eval_days: 14
    # how long a fraud label takes to be reported: training payments are that old at the split
    maturity_days: 10
"""

PAYMENTS_FEATURES_PY = '''\
"""The payments table and the standard fraud features over it: edit the columns to match yours.

data/payments.csv, one row per payment: tx_id, tx_datetime (UTC timestamp), customer_id,
terminal_id, tx_amount (EUR, major units), tx_fraud (1 = fraud), fraud_reported_at (when the
fraud was reported; empty when not fraud). That is the minimal table; every optional column
below brings its features back (bootstrap prints which are left out, and why).
"""

from __future__ import annotations

from decision_service.features.declarative import Events, Table, Time  # noqa: F401 (Table: users=)
from decision_service.features.payments import Payments, fraud_features
from decision_service.features.registry import FeatureRegistry

PAYMENTS = Payments(
    Events(
        "payments",
        "payments.csv",  # a file, a folder or a glob; Parquet by default, or format="csv"
        Time("tx_datetime", "timestamp"),  # or Time("ts", "s" | "ms" | "us"); timezone="UTC"
        format="csv",
        keys={
            "user_id": "customer_id",  # the cardholder / customer
            "merchant_id": "terminal_id",  # the merchant or terminal
            # "device_id": "device_id",  # device profiles, device velocity, "new device"
        },
    ),
    transaction_id="tx_id",
    amount="tx_amount",
    amount_unit="major",  # "minor" for cents
    label="tx_fraud",  # true / 1 = fraud
    label_time=Time("fraud_reported_at", "timestamp"),  # or leave out: label_delay="7d"
    # currency="currency",  # ISO 4217 per payment (else default_currency="EUR")
    # country="country",  # with users + home_country: "abroad" features
    # channel="channel",  # WEB / APP / POS / PHONE or 1..4
    # users=Table("customers", "customers.csv", key="customer_id", format="csv"),
    # signup=Time("signed_up_at", "timestamp"),  # a column of users: account age
    # home_country="home_country",  # a column of users
)
FRAUD = fraud_features(PAYMENTS)
REGISTRY = FeatureRegistry(groups=FRAUD.groups, on_demand=FRAUD.on_demand)
'''

TEMPLATES = ("shop", "payments")


def _payments_sample(data: Path) -> Path:
    """A tiny generated payments world (offline/simulation/fraud_world.py), minimal export."""
    import tempfile

    from offline.simulation.fraud_world import export_minimal, fraud_preset, generate_fraud_world

    with tempfile.TemporaryDirectory() as tmp:
        world = generate_fraud_world(fraud_preset("tiny"), tmp)
    export_minimal(world, data / "payments.csv")
    return data / "payments.csv"


def scaffold(directory: str | Path, template: str = "shop") -> list[Path]:
    """Writes the example project ``template`` (TEMPLATES) into ``directory``; returns the
    files written.

    On failure: FileExistsError when ``directory`` already holds a project.yaml; ValueError
    naming the templates for an unknown one."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    root = Path(directory)
    if (root / "project.yaml").exists():
        raise FileExistsError(f"{root / 'project.yaml'} exists: init writes a new project only")
    (root / "data").mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in root.resolve().name) or "my-project"
    files = {
        root / "project.yaml": (PROJECT_YAML if template == "shop" else PAYMENTS_YAML).format(name=name),
        root / "features.py": FEATURES_PY if template == "shop" else PAYMENTS_FEATURES_PY,
        root / ".gitignore": GITIGNORE,
    }
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    if template == "payments":
        return [*files, _payments_sample(root / "data")]
    _sample(root / "data")
    return [*files, root / "data" / "users.csv", root / "data" / "items.csv", root / "data" / "events.csv"]
