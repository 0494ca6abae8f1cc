"""A seeded, deterministic synthetic e-commerce world: users, items, interactions, truth.

Generative model (the same one ``click_probability`` exposes, so simulated responses to
served recommendations follow the world's own behaviour):

* Items have a category, a unit latent vector near their category's centroid, a power-law
  quality (``item_bias`` = its log), a lognormal price by category, stock and a listing time.
* Users have a unit latent taste vector built from 1-3 favourite categories, a category
  preference (mostly the favourites), an activity rate, a price sensitivity and a sign-up time.
* Browsing: each active user-day a user is *exposed* to Poisson(rate) items; the category of
  an exposure follows the user's preference and the item within it follows quality. An
  exposure at a time before the item was listed is dropped.
* The user clicks an exposed item with ``click_probability`` (taste affinity, quality, price)
  and buys a clicked item with ``purchase_probability``; a purchase is its own event a few
  minutes after the click.

Files written by ``generate_world(config, out)``: users.parquet, items.parquet,
interactions.parquet (sorted by time), truth.npz and world.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

WORLD_START_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: every world starts here, so a seed fully determines its data."""
DAY_MS = 86_400_000
CATEGORY_NAMES: tuple[str, ...] = (
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
"""The generated catalog's taxonomy (items.parquet ``category`` indexes it, ``category_name`` holds
the name); the example project examples/synthetic declares the same vocabulary (CATEGORIES)."""
N_CATEGORIES = len(CATEGORY_NAMES)
ID_DIGITS = 7
EVENT_TYPES = ("click", "purchase")


@dataclass(frozen=True)
class WorldConfig:
    """Size and behaviour knobs of a synthetic world; the seed makes it reproducible."""

    preset: str = "custom"
    n_users: int = 10_000
    n_items: int = 20_000
    days: int = 60
    seed: int = 42
    latent_dim: int = 16
    exposures_per_day: float = 1.5
    """Mean items a user is shown per active day (about 20-30% get clicked)."""
    activity_sigma: float = 0.9
    """Log-std of users' activity rates (heavy and light users)."""
    affinity_scale: float = 5.0
    """Weight of the latent taste dot product in the click and purchase logits."""
    quality_weight: float = 0.3
    """Weight of item quality (log popularity) in the click logit."""
    click_bias: float = -4.0
    purchase_bias: float = -4.5
    purchase_affinity_scale: float = 3.0
    popularity_shape: float = 1.1
    """Pareto shape of item quality: smaller means a heavier head."""
    category_pull: float = 0.7
    """How close items and tastes sit to their category centroid (0..1)."""
    favourite_share: float = 0.8
    """Share of a user's browsing that goes to their favourite categories."""
    out_of_stock_share: float = 0.05
    new_item_share: float = 0.15
    """Share of items listed during the simulated window (the rest are older)."""
    new_user_share: float = 0.15
    chunk_users: int = 10_000
    """Users simulated per vectorised chunk (bounds memory; does not change the data)."""

    @property
    def start_ms(self) -> int:
        return WORLD_START_MS

    @property
    def now_ms(self) -> int:
        return WORLD_START_MS + self.days * DAY_MS


PRESETS: dict[str, WorldConfig] = {
    "tiny": WorldConfig(preset="tiny", n_users=1_500, n_items=2_000, chunk_users=1_500),
    "small": WorldConfig(preset="small", n_users=10_000, n_items=20_000),
    "bench": WorldConfig(preset="bench", n_users=150_000, n_items=1_000_000),
}


def preset(name: str, **overrides: Any) -> WorldConfig:
    """A named preset ("tiny", "small", "bench") with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


@dataclass(frozen=True)
class WorldTruth:
    """Hidden parameters of the world: what users really like. Never a model input."""

    user_latent: np.ndarray          # float32 [n_users, latent_dim], unit rows
    item_latent: np.ndarray          # float32 [n_items, latent_dim], unit rows
    item_bias: np.ndarray            # float32 [n_items], log quality (centred)
    item_price_z: np.ndarray         # float32 [n_items], price z-score within its category
    user_price_sensitivity: np.ndarray  # float32 [n_users], >= 0
    user_category_pref: np.ndarray   # float32 [n_users, n_categories], rows sum to 1
    user_activity: np.ndarray        # float32 [n_users], exposures per active day
    params: dict[str, float]         # scalar coefficients of the choice model

    def save(self, path: Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}
        np.savez(path, **arrays, params=json.dumps(self.params))

    @classmethod
    def load(cls, path: Path) -> WorldTruth:
        with np.load(path) as z:
            kw = {f.name: z[f.name] for f in fields(cls) if f.name != "params"}
            return cls(**kw, params=json.loads(str(z["params"])))


def _choice_params(cfg: WorldConfig) -> dict[str, float]:
    return {
        "affinity_scale": cfg.affinity_scale,
        "quality_weight": cfg.quality_weight,
        "click_bias": cfg.click_bias,
        "purchase_bias": cfg.purchase_bias,
        "purchase_affinity_scale": cfg.purchase_affinity_scale,
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def click_probability(
    truth: WorldTruth, user_idx: int | np.ndarray, item_idx: np.ndarray
) -> np.ndarray:
    """P(click | item shown to user): the choice model that generated the interactions.

    ``user_idx`` is one user row (broadcast) or an array aligned with ``item_idx``.
    Returns float64 [len(item_idx)].
    """
    p = truth.params
    u = np.broadcast_to(np.asarray(user_idx), np.shape(item_idx))
    affinity = np.einsum("ij,ij->i", truth.user_latent[u], truth.item_latent[item_idx])
    logit = (
        p["click_bias"]
        + p["affinity_scale"] * affinity
        + p["quality_weight"] * truth.item_bias[item_idx]
        - truth.user_price_sensitivity[u] * truth.item_price_z[item_idx]
    )
    return _sigmoid(logit.astype(np.float64))


def purchase_probability(
    truth: WorldTruth, user_idx: int | np.ndarray, item_idx: np.ndarray
) -> np.ndarray:
    """P(purchase | the user clicked the item), same conventions as ``click_probability``."""
    p = truth.params
    u = np.broadcast_to(np.asarray(user_idx), np.shape(item_idx))
    affinity = np.einsum("ij,ij->i", truth.user_latent[u], truth.item_latent[item_idx])
    logit = (
        p["purchase_bias"]
        + p["purchase_affinity_scale"] * affinity
        - 2.0 * truth.user_price_sensitivity[u] * truth.item_price_z[item_idx]
    )
    return _sigmoid(logit.astype(np.float64))


@dataclass(frozen=True)
class World:
    """A loaded world as numpy arrays. Row ``r`` of users/items is entity ``u{r:07d}``/``i{r:07d}``.

    Events are sorted by time; ``event_purchase`` is True for purchases, False for clicks.
    """

    config: WorldConfig
    start_ms: int
    now_ms: int
    user_ids: np.ndarray          # object [n_users]
    user_signup_ms: np.ndarray    # int64
    item_ids: np.ndarray          # object [n_items]
    item_category: np.ndarray     # int16
    item_price: np.ndarray        # float32
    item_stock: np.ndarray        # int32
    item_listed_ms: np.ndarray    # int64
    event_user: np.ndarray        # int32
    event_item: np.ndarray        # int32
    event_purchase: np.ndarray    # bool
    event_ms: np.ndarray          # int64, ascending
    directory: Path | None = None  # the files it was loaded from (the declared sources read them)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_events(self) -> int:
        return len(self.event_ms)

    def events_before(self, t_ms: int) -> slice:
        """Slice of the (time-sorted) event arrays strictly before ``t_ms``."""
        return slice(0, int(np.searchsorted(self.event_ms, t_ms, side="left")))

    def events_between(self, t0_ms: int, t1_ms: int) -> slice:
        """Slice of events with ``t0_ms <= time < t1_ms``."""
        lo = int(np.searchsorted(self.event_ms, t0_ms, side="left"))
        hi = int(np.searchsorted(self.event_ms, t1_ms, side="left"))
        return slice(lo, hi)

    def day_ms(self, day: float) -> int:
        """World time ``day`` days after the start."""
        return self.start_ms + int(round(day * DAY_MS))

    @classmethod
    def load(cls, directory: str | Path) -> World:
        d = Path(directory)
        meta = json.loads((d / "world.json").read_text())
        cfg = WorldConfig(**meta["config"])
        users = pq.read_table(d / "users.parquet")
        items = pq.read_table(d / "items.parquet")
        ev = pq.read_table(
            d / "interactions.parquet", columns=["user_idx", "item_idx", "event", "ts_ms"]
        )
        purchase = pc.equal(ev.column("event").cast(pa.string()), "purchase")
        return cls(
            config=cfg,
            start_ms=int(meta["start_ms"]),
            now_ms=int(meta["now_ms"]),
            user_ids=np.asarray(users.column("user_id").to_pylist(), dtype=object),
            user_signup_ms=users.column("signup_ms").to_numpy().astype(np.int64),
            item_ids=np.asarray(items.column("item_id").to_pylist(), dtype=object),
            item_category=items.column("category").to_numpy().astype(np.int16),
            item_price=items.column("price").to_numpy().astype(np.float32),
            item_stock=items.column("stock").to_numpy().astype(np.int32),
            item_listed_ms=items.column("listed_ms").to_numpy().astype(np.int64),
            event_user=ev.column("user_idx").to_numpy().astype(np.int32),
            event_item=ev.column("item_idx").to_numpy().astype(np.int32),
            event_purchase=purchase.to_numpy(zero_copy_only=False).astype(bool),
            event_ms=ev.column("ts_ms").to_numpy().astype(np.int64),
            directory=d,
        )


def load_truth(directory: str | Path) -> WorldTruth:
    """The hidden truth of a world directory (for simulating responses, never for features)."""
    return WorldTruth.load(Path(directory) / "truth.npz")


def format_ids(prefix: str, n: int) -> pa.Array:
    """``prefix`` + zero-padded row numbers: format_ids("u", 2) -> ["u0000000", "u0000001"]."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), ID_DIGITS, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def _sample_rows(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each ``rows[k]`` draws a column from that row's CDF ``cum`` (rows end at 1)."""
    ncol = cum.shape[1]
    flat = (cum + np.arange(len(cum))[:, None]).ravel()
    flat[ncol - 1 :: ncol] = np.arange(1, len(cum) + 1)  # exact row ends, no fp gaps
    col = np.searchsorted(flat, rows + u, side="right") - rows * ncol
    return np.minimum(col, ncol - 1)


def _make_items(cfg: WorldConfig, rng: np.random.Generator, centroids: np.ndarray) -> dict[str, np.ndarray]:
    n, d = cfg.n_items, cfg.latent_dim
    cat_weights = rng.dirichlet(np.full(N_CATEGORIES, 5.0))
    category = rng.choice(N_CATEGORIES, size=n, p=cat_weights).astype(np.int16)
    noise = _unit_rows(rng.standard_normal((n, d)))
    latent = _unit_rows(cfg.category_pull * centroids[category] + (1 - cfg.category_pull) * 1.4 * noise)
    quality = rng.pareto(cfg.popularity_shape, size=n) + 1.0
    bias = np.log(quality)
    bias -= bias.mean()
    cat_log_mu = rng.uniform(np.log(8.0), np.log(150.0), size=N_CATEGORIES)
    price_sigma = 0.5
    log_price = rng.normal(cat_log_mu[category], price_sigma)
    price = np.round(np.exp(log_price), 2).clip(0.5, None)
    stock = rng.geometric(1 / 40, size=n).astype(np.int32)
    stock[rng.random(n) < cfg.out_of_stock_share] = 0
    listed = np.where(
        rng.random(n) < cfg.new_item_share,
        cfg.start_ms + rng.random(n) * (cfg.days - 1) * DAY_MS,
        cfg.start_ms - rng.random(n) * 365 * DAY_MS,
    ).astype(np.int64)
    return {
        "category": category, "latent": latent.astype(np.float32), "bias": bias.astype(np.float32),
        "quality": quality, "price": price.astype(np.float32),
        "price_z": ((np.log(price) - cat_log_mu[category]) / price_sigma).astype(np.float32),
        "stock": stock, "listed_ms": listed,
    }


def _make_users(cfg: WorldConfig, rng: np.random.Generator, centroids: np.ndarray) -> dict[str, np.ndarray]:
    n, d = cfg.n_users, cfg.latent_dim
    n_fav = rng.integers(1, 4, size=n)
    fav = np.argsort(rng.random((n, N_CATEGORIES)), axis=1)[:, :3]
    fav_w = rng.dirichlet(np.ones(3), size=n) * (np.arange(3)[None, :] < n_fav[:, None])
    fav_w /= fav_w.sum(axis=1, keepdims=True)
    fav_pref = np.zeros((n, N_CATEGORIES))
    np.put_along_axis(fav_pref, fav, fav_w, axis=1)
    background = rng.dirichlet(np.full(N_CATEGORIES, 0.5), size=n)
    pref = cfg.favourite_share * fav_pref + (1 - cfg.favourite_share) * background
    noise = _unit_rows(rng.standard_normal((n, d)))
    latent = _unit_rows(cfg.category_pull * (fav_pref @ centroids) + (1 - cfg.category_pull) * 1.4 * noise)
    activity = cfg.exposures_per_day * rng.lognormal(
        -cfg.activity_sigma**2 / 2, cfg.activity_sigma, size=n
    )
    signup = np.where(
        rng.random(n) < cfg.new_user_share,
        cfg.start_ms + rng.random(n) * (cfg.days - 1) * DAY_MS,
        cfg.start_ms - rng.random(n) * 730 * DAY_MS,
    ).astype(np.int64)
    return {
        "latent": latent.astype(np.float32), "pref": pref.astype(np.float32),
        "activity": activity.astype(np.float32),
        "price_sens": rng.gamma(2.0, 0.25, size=n).astype(np.float32), "signup_ms": signup,
    }


Arrays = dict[str, np.ndarray]


def simulate(cfg: WorldConfig) -> tuple[Arrays, Arrays, WorldTruth, Arrays]:
    """Draws users, items and interactions; returns (users, items, truth, events) as arrays."""
    seeds = np.random.SeedSequence(cfg.seed).spawn(3)
    rng = np.random.default_rng(seeds[0])
    centroids = _unit_rows(rng.standard_normal((N_CATEGORIES, cfg.latent_dim)))
    items = _make_items(cfg, rng, centroids)
    users = _make_users(cfg, np.random.default_rng(seeds[1]), centroids)
    truth = WorldTruth(
        user_latent=users["latent"], item_latent=items["latent"], item_bias=items["bias"],
        item_price_z=items["price_z"], user_price_sensitivity=users["price_sens"],
        user_category_pref=users["pref"], user_activity=users["activity"],
        params=_choice_params(cfg),
    )
    # Items sorted by category; within a category an exposure picks an item by quality.
    by_cat = np.argsort(items["category"], kind="stable")
    cum_q = np.cumsum(items["quality"][by_cat])
    cat_end = np.searchsorted(items["category"][by_cat], np.arange(N_CATEGORIES), side="right")
    cat_start = np.concatenate([[0], cat_end[:-1]])
    cat_lo_q = np.where(cat_start > 0, cum_q[np.maximum(cat_start - 1, 0)], 0.0)
    cat_total_q = np.where(cat_end > cat_start, cum_q[np.maximum(cat_end - 1, 0)] - cat_lo_q, 0.0)
    # Empty categories (tiny catalogs) are never browsed.
    pref = users["pref"].astype(np.float64) * (cat_total_q > 0)[None, :]
    pref_cum = np.cumsum(pref / pref.sum(axis=1, keepdims=True), axis=1)

    parts: list[dict[str, np.ndarray]] = []
    chunk_seeds = seeds[2].spawn((cfg.n_users + cfg.chunk_users - 1) // cfg.chunk_users)
    for c, lo in enumerate(range(0, cfg.n_users, cfg.chunk_users)):
        hi = min(lo + cfg.chunk_users, cfg.n_users)
        parts.append(_simulate_chunk(cfg, np.random.default_rng(chunk_seeds[c]), lo, hi, users,
                                     truth, pref_cum, by_cat, cum_q, cat_lo_q, cat_total_q,
                                     cat_start, cat_end, items["listed_ms"]))
    events = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((events["purchase"], events["item"], events["user"], events["ts_ms"]))
    events = {k: v[order] for k, v in events.items()}
    return users, items, truth, events


def _simulate_chunk(
    cfg: WorldConfig, rng: np.random.Generator, lo: int, hi: int, users: dict[str, np.ndarray],
    truth: WorldTruth, pref_cum: np.ndarray, by_cat: np.ndarray, cum_q: np.ndarray,
    cat_lo_q: np.ndarray, cat_total_q: np.ndarray, cat_start: np.ndarray, cat_end: np.ndarray,
    listed_ms: np.ndarray,
) -> dict[str, np.ndarray]:
    active_from = np.maximum(users["signup_ms"][lo:hi], cfg.start_ms)
    span_ms = (cfg.now_ms - active_from).astype(np.float64)
    n_exp = rng.poisson(users["activity"][lo:hi] * span_ms / DAY_MS)
    local = np.repeat(np.arange(hi - lo), n_exp)
    user = local + lo
    cat = _sample_rows(pref_cum[lo:hi], local, rng.random(len(local)))
    target = cat_lo_q[cat] + rng.random(len(local)) * cat_total_q[cat]
    pos = np.clip(np.searchsorted(cum_q, target, side="right"), cat_start[cat], cat_end[cat] - 1)
    item = by_cat[pos]
    ts = (active_from[local] + rng.random(len(local)) * span_ms[local]).astype(np.int64)
    listed = ts >= listed_ms[item]
    p_click = click_probability(truth, user, item)
    clicked = listed & (rng.random(len(local)) < p_click)
    user, item, ts = user[clicked], item[clicked], ts[clicked]
    bought = rng.random(len(user)) < purchase_probability(truth, user, item)
    buy_ts = ts + rng.integers(60_000, 30 * 60_000, size=len(user))
    bought &= buy_ts < cfg.now_ms
    return {
        "user": np.concatenate([user, user[bought]]).astype(np.int32),
        "item": np.concatenate([item, item[bought]]).astype(np.int32),
        "purchase": np.concatenate([np.zeros(len(user), bool), np.ones(int(bought.sum()), bool)]),
        "ts_ms": np.concatenate([ts, buy_ts[bought]]).astype(np.int64),
    }


def generate_world(cfg: WorldConfig, out: str | Path) -> dict[str, Any]:
    """Simulates ``cfg`` and writes the world files into ``out``; returns world.json's content."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    users, items, truth, ev = simulate(cfg)
    user_ids = format_ids("u", cfg.n_users)
    item_ids = format_ids("i", cfg.n_items)
    pq.write_table(pa.table({
        "user_id": user_ids,
        "signup_ms": pa.array(users["signup_ms"]),
    }), out / "users.parquet")
    pq.write_table(pa.table({
        "item_id": item_ids,
        "category": pa.array(items["category"]),
        "category_name": pa.DictionaryArray.from_arrays(
            pa.array(items["category"].astype(np.int32)), pa.array(list(CATEGORY_NAMES))),
        "price": pa.array(items["price"]),
        "stock": pa.array(items["stock"]),
        "listed_ms": pa.array(items["listed_ms"]),
    }), out / "items.parquet")
    pq.write_table(pa.table({
        "user_id": pa.DictionaryArray.from_arrays(pa.array(ev["user"]), user_ids),
        "item_id": pa.DictionaryArray.from_arrays(pa.array(ev["item"]), item_ids),
        "event": pa.DictionaryArray.from_arrays(
            pa.array(ev["purchase"].astype(np.int8)), pa.array(list(EVENT_TYPES))),
        "ts_ms": pa.array(ev["ts_ms"]),
        "user_idx": pa.array(ev["user"]),
        "item_idx": pa.array(ev["item"]),
    }), out / "interactions.parquet")
    truth.save(out / "truth.npz")
    meta = {
        "config": asdict(cfg),
        "start_ms": cfg.start_ms,
        "now_ms": cfg.now_ms,
        "n_users": cfg.n_users,
        "n_items": cfg.n_items,
        "n_events": int(len(ev["ts_ms"])),
        "n_purchases": int(ev["purchase"].sum()),
        "categories": list(CATEGORY_NAMES),
        "generation_seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2))
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.simulation.world", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--out", default="data/world", help="output directory")
    ap.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    ap.add_argument("--users", type=int, default=None, help="override the number of users")
    ap.add_argument("--items", type=int, default=None, help="override the number of items")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.users is not None:
        overrides["n_users"] = args.users
    if args.items is not None:
        overrides["n_items"] = args.items
    meta = generate_world(preset(args.preset, **overrides), args.out)
    print(
        f"world {meta['config']['preset']}: {meta['n_users']:,} users, {meta['n_items']:,} items, "
        f"{meta['n_events']:,} events ({meta['n_purchases']:,} purchases) "
        f"in {meta['generation_seconds']:.1f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
