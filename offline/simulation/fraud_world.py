"""A seeded, deterministic synthetic payments world with learnable fraud and late labels.

Legitimate behaviour: each user pays at their own rate, mostly during the day, from one or
two own devices, in their home country and currency, around their own typical amount (a
lognormal per user, scaled by the merchant category); a few legitimate payments happen abroad
(travel) or from a new device (a new phone), so neither signal alone means fraud.

Fraud patterns (``pattern``):
  1 account takeover  a fraudster device (shared across victims), mostly a foreign country,
                      at night more often, 3-10x the victim's usual amount, 1-3 payments
  2 card testing      bursts of 4-15 tiny payments within minutes at digital-goods merchants
  3 risky merchant    a few colluding merchants charge their customers' cards, often from
                      the customer's own device: only the merchant's history gives it away

Labels arrive late: most fraud (and a little "friendly fraud") gets a chargeback 1 + Exp(3)
days after the payment (``chargeback_ms``, -1 = none). Files: transactions.parquet (time
order; the parties as row indices ``user`` / ``merchant`` / ``device`` and as ids
``user_id`` / ``merchant_id`` / ``device_id``), users.parquet, merchants.parquet,
devices.parquet, currencies.parquet (the reference EUR rates of features.currencies.CURRENCIES),
fraud_world.json.
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
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from decision_service.features.currencies import CURRENCIES, amount_eur
from offline.simulation.world import DAY_MS, WORLD_START_MS

HOUR_MS = 3_600_000
HOME_COUNTRIES = ("DE", "FR", "GB", "ES", "IT", "NL", "US", "PL", "SE", "BE")
HOME_WEIGHTS = (0.2, 0.16, 0.16, 0.1, 0.09, 0.07, 0.1, 0.05, 0.04, 0.03)
COUNTRY_CURRENCY = {
    "DE": "EUR",
    "FR": "EUR",
    "GB": "GBP",
    "ES": "EUR",
    "IT": "EUR",
    "NL": "EUR",
    "US": "USD",
    "PL": "PLN",
    "SE": "SEK",
    "BE": "EUR",
}
TRAVEL_COUNTRIES = HOME_COUNTRIES + ("PT", "GR", "TH", "MX", "JP", "TR", "CH", "AT")
FRAUD_COUNTRIES = ("NG", "RU", "BR", "ID", "VN", "RO", "UA", "PH")
# (merchant category code, amount factor, share of merchants)
MCCS = (
    ("5411", 1.0, 0.22),  # grocery
    ("5812", 0.8, 0.18),  # restaurants
    ("5541", 1.2, 0.08),  # fuel
    ("5732", 4.0, 0.08),  # electronics
    ("5944", 5.0, 0.04),  # jewelry
    ("5311", 1.5, 0.12),  # department stores
    ("4111", 0.5, 0.06),  # transit
    ("5816", 0.6, 0.10),  # digital goods / games
    ("4722", 6.0, 0.04),  # travel agencies
    ("5999", 1.0, 0.08),  # misc retail
)
HIGH_VALUE_MCCS = ("5732", "5944", "4722")
DIGITAL_MCC = "5816"
PATTERNS = ("legit", "account_takeover", "card_testing", "risky_merchant")


@dataclass(frozen=True)
class FraudWorldConfig:
    """Size and behaviour knobs; the seed makes a world reproducible bit for bit."""

    preset: str = "custom"
    n_users: int = 8_000
    n_merchants: int = 600
    days: int = 60
    seed: int = 11
    txn_per_user_day: float = 0.5
    """Mean legitimate payments per user per day (lognormal across users)."""
    ato_per_user_day: float = 0.0015
    card_tests_per_user_day: float = 0.0004
    risky_merchant_share: float = 0.04
    risky_merchant_frauds_per_user_day: float = 0.0012
    travel_share: float = 0.03
    legit_new_device_share: float = 0.02
    chargeback_share_fraud: float = 0.85
    friendly_fraud_share: float = 0.0008
    chargeback_delay_mean_days: float = 3.0
    """Chargebacks arrive 1 + Exp(mean) days after the payment."""

    @property
    def start_ms(self) -> int:
        return WORLD_START_MS

    @property
    def end_ms(self) -> int:
        return WORLD_START_MS + self.days * DAY_MS


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_users": 1_500, "n_merchants": 250, "days": 60},
    "small": {"n_users": 8_000, "n_merchants": 600, "days": 60},
    "bench": {"n_users": 100_000, "n_merchants": 5_000, "days": 90},
}


def fraud_preset(name: str, **overrides: Any) -> FraudWorldConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(FraudWorldConfig(preset=name, **PRESETS[name]), **overrides)


@dataclass
class FraudWorld:
    """Transactions (time order) and their parties, as numpy columns."""

    config: FraudWorldConfig
    # transactions
    txn_ids: np.ndarray  # object str
    user: np.ndarray  # int32 row into users
    merchant: np.ndarray  # int32 row into merchants
    device: np.ndarray  # int32 row into devices
    amount_minor: np.ndarray  # int64, in the user's currency
    currency: np.ndarray  # object str (ISO 4217)
    country: np.ndarray  # object str (ISO 3166-1 alpha-2)
    channel: np.ndarray  # int8, decision.v1.Channel
    occurred_ms: np.ndarray  # int64, sorted
    is_fraud: np.ndarray  # bool (truth)
    pattern: np.ndarray  # int8 index into PATTERNS
    chargeback_ms: np.ndarray  # int64, -1 = no chargeback ever
    # parties
    user_ids: np.ndarray
    user_home: np.ndarray  # object str
    user_signup_ms: np.ndarray  # int64
    merchant_ids: np.ndarray
    merchant_mcc: np.ndarray  # object str
    merchant_risky: np.ndarray  # bool
    device_ids: np.ndarray
    device_ip: np.ndarray  # object str
    directory: Path | None = None  # where it was saved / loaded from (declared features read it)
    # a project's payments (offline/features/payments.py): their own span and EUR amounts
    span_ms: tuple[int, int] | None = None  # (start, now); None: the config's
    eur: np.ndarray | None = None  # float64 amount in EUR; None: from amount_minor and currency

    @property
    def n(self) -> int:
        return len(self.txn_ids)

    @property
    def start_ms(self) -> int:
        return self.config.start_ms if self.span_ms is None else self.span_ms[0]

    @property
    def now_ms(self) -> int:
        return self.config.end_ms if self.span_ms is None else self.span_ms[1]

    @property
    def has_devices(self) -> bool:
        """False for a payments table without a device column (``device`` is then all -1)."""
        return len(self.device_ids) > 0

    def day_ms(self, day: float) -> int:
        return self.start_ms + int(day * DAY_MS)

    def instrument_ids(self, rows: np.ndarray) -> list[str]:
        """Card-like payment instrument ids (one card per user)."""
        return [f"c{u:07d}" for u in self.user[rows].tolist()]

    def save(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.directory = out
        pq.write_table(
            pa.table(
                {
                    "txn_id": self.txn_ids.astype(str),
                    "user": self.user,
                    "merchant": self.merchant,
                    "device": self.device,
                    "amount_minor": self.amount_minor,
                    "currency": self.currency.astype(str),
                    "country": self.country.astype(str),
                    "channel": self.channel,
                    "occurred_ms": self.occurred_ms,
                    "is_fraud": self.is_fraud,
                    "pattern": self.pattern,
                    "chargeback_ms": self.chargeback_ms,
                    # the parties' ids, for sources that join by id (declared features)
                    "user_id": self.user_ids[self.user].astype(str),
                    "merchant_id": self.merchant_ids[self.merchant].astype(str),
                    "device_id": self.device_ids[self.device].astype(str),
                }
            ),
            out / "transactions.parquet",
        )
        # the reference rates the amounts were drawn with (amount EUR = minor / 10^exponent * rate)
        pq.write_table(
            pa.table(
                {
                    "currency": list(CURRENCIES),
                    "exponent": pa.array([e for e, _ in CURRENCIES.values()], pa.int32()),
                    "eur_rate": pa.array([r for _, r in CURRENCIES.values()], pa.float64()),
                }
            ),
            out / "currencies.parquet",
        )
        pq.write_table(
            pa.table(
                {
                    "user_id": self.user_ids.astype(str),
                    "home": self.user_home.astype(str),
                    "signup_ms": self.user_signup_ms,
                }
            ),
            out / "users.parquet",
        )
        pq.write_table(
            pa.table(
                {
                    "merchant_id": self.merchant_ids.astype(str),
                    "mcc": self.merchant_mcc.astype(str),
                    "risky": self.merchant_risky,
                }
            ),
            out / "merchants.parquet",
        )
        pq.write_table(
            pa.table({"device_id": self.device_ids.astype(str), "ip": self.device_ip.astype(str)}),
            out / "devices.parquet",
        )
        stats = {
            "transactions": self.n,
            "fraud": int(self.is_fraud.sum()),
            "chargebacks": int((self.chargeback_ms >= 0).sum()),
            **{p: int((self.pattern == i).sum()) for i, p in enumerate(PATTERNS)},
        }
        (out / "fraud_world.json").write_text(
            json.dumps({"config": asdict(self.config), "stats": stats}, indent=2)
        )

    @classmethod
    def load(cls, path: str | Path) -> FraudWorld:
        path = Path(path)
        meta = json.loads((path / "fraud_world.json").read_text())
        names = {f.name for f in fields(FraudWorldConfig)}
        config = FraudWorldConfig(**{k: v for k, v in meta["config"].items() if k in names})
        t = pq.read_table(path / "transactions.parquet")
        u = pq.read_table(path / "users.parquet")
        m = pq.read_table(path / "merchants.parquet")
        d = pq.read_table(path / "devices.parquet")

        def col(table: pa.Table, name: str) -> np.ndarray:
            c = table.column(name)
            if pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
                return np.asarray(c.to_pylist(), dtype=object)
            return c.to_numpy()

        return cls(
            config,
            col(t, "txn_id"),
            col(t, "user"),
            col(t, "merchant"),
            col(t, "device"),
            col(t, "amount_minor"),
            col(t, "currency"),
            col(t, "country"),
            col(t, "channel"),
            col(t, "occurred_ms"),
            col(t, "is_fraud"),
            col(t, "pattern"),
            col(t, "chargeback_ms"),
            col(u, "user_id"),
            col(u, "home"),
            col(u, "signup_ms"),
            col(m, "merchant_id"),
            col(m, "mcc"),
            col(m, "risky"),
            col(d, "device_id"),
            col(d, "ip"),
            path,
        )


MINIMAL_COLUMNS = (
    "tx_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_fraud",
    "fraud_reported_at",
)
"""The columns of ``export_minimal``'s table (examples/payments declares them)."""


def export_minimal(world: FraudWorld, path: str | Path) -> int:
    """Writes ``world`` as a payments team's minimal CSV (MINIMAL_COLUMNS): id, time (UTC
    timestamp), customer, terminal, amount in EUR (major units, 2 decimals), the label (the
    chargeback: what a team knows) and when it was reported. Written whole or not at all
    (a temporary file renamed). Returns the number of labelled payments."""
    path = Path(path)
    # a label reported after the last payment is not known yet to the team exporting the table
    reported = (world.chargeback_ms >= 0) & (world.chargeback_ms <= world.occurred_ms.max())
    eur = amount_eur(world.amount_minor, world.currency)
    table = pa.table(
        {
            "tx_id": world.txn_ids.astype(str),
            "tx_datetime": pa.array(world.occurred_ms, pa.timestamp("ms", tz="UTC")),
            "customer_id": world.user_ids[world.user].astype(str),
            "terminal_id": world.merchant_ids[world.merchant].astype(str),
            "tx_amount": pa.array(eur.round(2)),
            "tx_fraud": pa.array(reported.astype(np.int8)),
            "fraud_reported_at": pa.array(
                np.where(reported, world.chargeback_ms, 0), pa.timestamp("ms", tz="UTC"), mask=~reported
            ),
        }
    )
    assert tuple(table.column_names) == MINIMAL_COLUMNS
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pacsv.write_csv(table, partial)
    partial.replace(path)
    return int(reported.sum())


def _ip(rng: np.random.Generator, n: int, first: tuple[int, ...]) -> np.ndarray:
    parts = np.column_stack([rng.choice(first, n), rng.integers(0, 256, (n, 2)), rng.integers(1, 255, n)])
    return np.array([".".join(map(str, p)) for p in parts.tolist()], dtype=object)


def generate_fraud_world(cfg: FraudWorldConfig, out: str | Path | None = None) -> FraudWorld:
    """Simulates the world (vectorised; a few seconds for "small") and optionally saves it."""
    rng = np.random.default_rng(cfg.seed)
    start, end, days = cfg.start_ms, cfg.end_ms, cfg.days
    nu, nm = cfg.n_users, cfg.n_merchants

    # ---- parties
    home = np.asarray(HOME_COUNTRIES, object)[rng.choice(len(HOME_COUNTRIES), nu, p=HOME_WEIGHTS)]
    currency = np.array([COUNTRY_CURRENCY[c] for c in home.tolist()], object)
    new_user = rng.random(nu) < 0.15
    signup = np.where(
        new_user,
        start + (rng.random(nu) * 0.8 * days * DAY_MS).astype(np.int64),
        start - (rng.random(nu) * 3 * 365 * DAY_MS).astype(np.int64),
    )
    typical_eur = np.exp(rng.normal(3.3, 0.6, nu))
    rate = cfg.txn_per_user_day * np.exp(rng.normal(-0.32, 0.8, nu))
    n_own = 1 + (rng.random(nu) < 0.4)
    own_first = np.concatenate([[0], np.cumsum(n_own)[:-1]])
    n_own_devices = int(n_own.sum())

    mcc_codes = np.asarray([m[0] for m in MCCS], object)
    mcc_factor = np.asarray([m[1] for m in MCCS])
    m_mcc = rng.choice(len(MCCS), nm, p=np.asarray([m[2] for m in MCCS]) / sum(m[2] for m in MCCS))
    m_pop = rng.pareto(1.2, nm) + 1.0
    m_risky = rng.random(nm) < cfg.risky_merchant_share
    m_risky[rng.choice(nm, 2, replace=False)] = True  # at least two

    # ---- legitimate payments
    first_day = np.clip(np.ceil((signup - start) / DAY_MS), 0, days - 1).astype(np.int64)
    counts = rng.poisson(rate * (days - first_day))
    lu = np.repeat(np.arange(nu), counts)
    n_legit = len(lu)
    day = first_day[lu] + (rng.random(n_legit) * (days - first_day[lu])).astype(np.int64)
    hour = np.clip(rng.normal(14.0, 4.0, n_legit), 0, 23.99)
    lt = start + day * DAY_MS + (hour * HOUR_MS).astype(np.int64)
    lm = rng.choice(nm, n_legit, p=m_pop / m_pop.sum())
    l_eur = typical_eur[lu] * np.exp(rng.normal(0, 0.5, n_legit)) * mcc_factor[m_mcc[lm]]
    ldev = own_first[lu] + (rng.random(n_legit) * n_own[lu]).astype(np.int64)
    fresh = rng.random(n_legit) < cfg.legit_new_device_share
    ldev[fresh] = n_own_devices + np.arange(int(fresh.sum()))
    n_devices = n_own_devices + int(fresh.sum())
    lcountry = home[lu].copy()
    travel = rng.random(n_legit) < cfg.travel_share
    lcountry[travel] = np.asarray(TRAVEL_COUNTRIES, object)[
        rng.integers(0, len(TRAVEL_COUNTRIES), travel.sum())
    ]
    lchannel = rng.choice([1, 2, 3], n_legit, p=[0.45, 0.45, 0.10])

    # ---- fraudster devices, shared across victims (a heavy-tailed reuse)
    n_ato = rng.poisson(cfg.ato_per_user_day * nu * days)
    n_ct = rng.poisson(cfg.card_tests_per_user_day * nu * days)
    n_pool = max(10, (n_ato + n_ct) // 3)
    pool_first = n_devices
    n_devices += n_pool
    pool_w = rng.pareto(1.0, n_pool) + 1.0
    pool_w /= pool_w.sum()

    def victims(n: int) -> tuple[np.ndarray, np.ndarray]:
        v = rng.integers(0, nu, n)
        t0 = np.maximum(signup[v], start) + (
            rng.random(n) * (end - np.maximum(signup[v], start) - HOUR_MS)
        ).astype(np.int64)
        return v, t0

    # account takeover: 1-3 payments within an hour
    av, at0 = victims(n_ato)
    ak = 1 + np.minimum(rng.poisson(0.8, n_ato), 2)
    a_ev = np.repeat(np.arange(n_ato), ak)
    au = av[a_ev]
    at = at0[a_ev] + (rng.random(len(a_ev)) * HOUR_MS).astype(np.int64)
    night = rng.random(len(a_ev)) < 0.5
    at = np.where(night, (at // DAY_MS) * DAY_MS + (rng.random(len(a_ev)) * 6 * HOUR_MS).astype(np.int64), at)
    hv = np.flatnonzero(np.isin(mcc_codes[m_mcc], HIGH_VALUE_MCCS))
    am = np.where(rng.random(len(a_ev)) < 0.7, rng.choice(hv, len(a_ev)), rng.integers(0, nm, len(a_ev)))
    a_eur = typical_eur[au] * np.exp(rng.normal(1.5, 0.5, len(a_ev))) * np.sqrt(mcc_factor[m_mcc[am]])
    adev = pool_first + rng.choice(n_pool, n_ato, p=pool_w)[a_ev]
    acountry = np.where(
        rng.random(n_ato) < 0.8,
        np.asarray(FRAUD_COUNTRIES, object)[rng.integers(0, len(FRAUD_COUNTRIES), n_ato)],
        home[av],
    )[a_ev]
    achannel = rng.choice([1, 2], len(a_ev))

    # card testing: bursts of tiny payments at one digital merchant within ~10 minutes
    cv, ct0 = victims(n_ct)
    ck = 4 + rng.poisson(6, n_ct)
    c_ev = np.repeat(np.arange(n_ct), ck)
    cu = cv[c_ev]
    ct = ct0[c_ev] + (rng.random(len(c_ev)) * 10 * 60_000).astype(np.int64)
    digital = np.flatnonzero(mcc_codes[m_mcc] == DIGITAL_MCC)
    if not len(digital):
        digital = np.arange(nm)
    cm = rng.choice(digital, n_ct)[c_ev]
    c_eur = rng.uniform(0.5, 5.0, len(c_ev))
    cdev = pool_first + rng.choice(n_pool, n_ct, p=pool_w)[c_ev]
    ccountry = np.asarray(TRAVEL_COUNTRIES + FRAUD_COUNTRIES, object)[
        rng.integers(0, len(TRAVEL_COUNTRIES) + len(FRAUD_COUNTRIES), n_ct)
    ][c_ev]
    cchannel = np.full(len(c_ev), 1)

    # risky merchants: charges on customers' cards, often from their own device
    n_rm = rng.poisson(cfg.risky_merchant_frauds_per_user_day * nu * days)
    ru, rt = victims(n_rm)
    risky = np.flatnonzero(m_risky)
    rmer = rng.choice(risky, n_rm)
    r_eur = typical_eur[ru] * np.exp(rng.normal(0.6, 0.5, n_rm)) * mcc_factor[m_mcc[rmer]]
    rdev = np.where(rng.random(n_rm) < 0.6, own_first[ru], pool_first + rng.choice(n_pool, n_rm, p=pool_w))
    rcountry = home[ru]
    rchannel = rng.choice([1, 2, 3], n_rm)

    # ---- assemble, time-sort
    user = np.concatenate([lu, au, cu, ru]).astype(np.int32)
    occurred = np.concatenate([lt, at, ct, rt]).astype(np.int64)
    merchant = np.concatenate([lm, am, cm, rmer]).astype(np.int32)
    device = np.concatenate([ldev, adev, cdev, rdev]).astype(np.int32)
    eur = np.concatenate([l_eur, a_eur, c_eur, r_eur])
    country = np.concatenate([lcountry, acountry, ccountry, rcountry])
    channel = np.concatenate([lchannel, achannel, cchannel, rchannel]).astype(np.int8)
    pattern = np.concatenate(
        [np.zeros(n_legit), np.full(len(a_ev), 1), np.full(len(c_ev), 2), np.full(n_rm, 3)]
    ).astype(np.int8)
    keep = (occurred >= start) & (occurred < end) & (occurred >= signup[user])
    order = np.argsort(occurred[keep], kind="stable")
    sel = np.flatnonzero(keep)[order]
    user, occurred, merchant, device = user[sel], occurred[sel], merchant[sel], device[sel]
    eur, country, channel, pattern = eur[sel], country[sel], channel[sel], pattern[sel]
    cur = currency[user]
    exp = np.array([CURRENCIES[c][0] for c in cur.tolist()])
    eur_rate = np.array([CURRENCIES[c][1] for c in cur.tolist()])
    amount_minor = np.maximum(1, np.round(eur / eur_rate * 10.0**exp)).astype(np.int64)
    is_fraud = pattern > 0
    n = len(user)
    cb = np.where(
        is_fraud, rng.random(n) < cfg.chargeback_share_fraud, rng.random(n) < cfg.friendly_fraud_share
    )
    delay = ((1.0 + rng.exponential(cfg.chargeback_delay_mean_days, n)) * DAY_MS).astype(np.int64)
    chargeback = np.where(cb, occurred + delay, -1).astype(np.int64)

    ips = np.concatenate(
        [
            _ip(rng, n_devices - n_pool, (31, 46, 62, 78, 81, 84, 90, 92, 95)),
            _ip(rng, n_pool, (45, 103, 185, 193)),
        ]
    )
    world = FraudWorld(
        config=cfg,
        txn_ids=np.array([f"t{i:09d}" for i in range(n)], dtype=object),
        user=user,
        merchant=merchant,
        device=device,
        amount_minor=amount_minor,
        currency=cur,
        country=country,
        channel=channel,
        occurred_ms=occurred,
        is_fraud=is_fraud,
        pattern=pattern,
        chargeback_ms=chargeback,
        user_ids=np.array([f"u{i:07d}" for i in range(nu)], dtype=object),
        user_home=home,
        user_signup_ms=signup.astype(np.int64),
        merchant_ids=np.array([f"m{i:05d}" for i in range(nm)], dtype=object),
        merchant_mcc=mcc_codes[m_mcc],
        merchant_risky=m_risky,
        device_ids=np.array([f"d{i:08d}" for i in range(n_devices)], dtype=object),
        device_ip=ips,
    )
    if out is not None:
        world.save(out)
    return world


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.simulation.fraud_world", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default="data/fraud_world")
    args = ap.parse_args(argv)
    cfg = fraud_preset(args.preset, **({"seed": args.seed} if args.seed is not None else {}))
    t0 = time.perf_counter()
    world = generate_fraud_world(cfg, args.out)
    print(
        f"{world.n:,} transactions, {int(world.is_fraud.sum()):,} fraud, "
        f"{int((world.chargeback_ms >= 0).sum()):,} chargebacks in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
