"""The fraud use case's data contract, and the standard fraud features built from it.

A project that serves fraud verdicts declares its payments table::

    PAYMENTS = Payments(
        Events("payments", "payments.csv", Time("ts", "s"), format="csv",
               keys={"user_id": "customer_id", "merchant_id": "terminal_id"}),
        transaction_id="tx_id", amount="amount", label="is_fraud",
    )
    FRAUD = fraud_features(PAYMENTS)
    REGISTRY = FeatureRegistry(groups=FRAUD.groups, on_demand=FRAUD.on_demand)

The **minimal table** is: a transaction id, a time, a customer (``keys["user_id"]``), a
merchant or terminal (``keys["merchant_id"]``), an amount and a fraud label (true / 1 =
fraud), with or without the label's own arrival time (``label_time``; without it a label
is taken to be known ``label_delay`` after the payment). Everything else is optional:

  currency       ISO 4217 column (else every amount is in ``default_currency``)
  amount_unit    "major" (12.50) or "minor" (1250 cents, the request's unit)
  device         ``keys["device_id"]``: device profiles, device velocity, "new device"; a
                 payment whose device is NULL has none (device features at their defaults)
  country        ISO 3166-1 alpha-2 of the payment
  users          a Table of customers with ``signup`` (account age) and ``home_country``
                 ("foreign country", the travel profile)
  merchants, devices  Tables of every merchant / device (the snapshot's population; without
                 them, the parties seen in payments)
  channel        decision.v1.Channel names (WEB, APP, POS, PHONE) or numbers
  mcc            merchant category code, ip, instrument: read for the log and the rules

``fraud_features`` turns the contract into the standard groups (FRAUD_USER, MERCHANT,
DEVICE, VELOCITY, FRAUD_REQUEST, FRAUD_NEIGHBOURS) and the model's feature order; a feature
that needs a column the table does not have is **left out**, and ``FraudFeatures.left_out``
says which and why (bootstrap prints it and stores it with the model version). The features'
values are computed by offline/features/compiler.py (profiles) and features/fraud.py
(velocity, request features), online and offline alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from decision_service.features.declarative import (
    Attribute,
    Count,
    Events,
    FirstSeenCount,
    GroupSource,
    Lookup,
    Mean,
    Ratio,
    Std,
    Table,
    Time,
    TimeSinceAttribute,
    TimeSinceFirst,
    TimeSinceLast,
    identifier,
    seconds,
    time_sql,
)
from decision_service.features.registry import Feature, FeatureGroup, OnDemandGroup, Reason

DAY_S = 86_400.0

CHANNELS: dict[str, int] = {"UNSPECIFIED": 0, "WEB": 1, "APP": 2, "POS": 3, "PHONE": 4}
"""decision.v1.Channel numbers by name (a table's channel column may hold either)."""

ISO_ALPHA2: tuple[str, ...] = tuple(chr(65 + i // 26) + chr(65 + i % 26) for i in range(26 * 26))
"""Every two-letter code "AA".."ZZ" in order: a country's index here is features.fraud.country_code."""

VELOCITY_WINDOWS: tuple[tuple[str, int], ...] = (("10m", 600), ("1h", 3_600), ("24h", 86_400))
"""Velocity windows (label, seconds) of the per-customer and per-device counters."""

M_CHARGEBACK_PRIOR = 0.01
"""Prior of a merchant's chargeback rate (20 pseudo-payments at it smooth a new merchant's)."""

# The standard columns fraud_features adds to the payments source (derived, DuckDB SQL).
STANDARD_COLUMNS = ("amount_eur", "log_amount_eur", "abroad", "chargeback_at", "home_alpha2")


@dataclass(frozen=True)
class Payments:
    """A project's payments table (see the module docstring).

    ``transactions``: an Events source with the ``user_id`` (customer) and ``merchant_id``
    (merchant or terminal) keys, optionally ``device_id``; its time is the payment's time.
    Column names below are columns of that source (file or derived); ``label`` is true / 1
    for fraud (NULL = not fraud); ``label_time`` the time the label arrived (a chargeback's
    arrival; read only where label is true)."""

    transactions: Events
    transaction_id: str
    amount: str
    label: str
    label_time: Time | None = None
    label_delay: str | float = "7d"
    amount_unit: Literal["major", "minor"] = "major"
    currency: str | None = None
    default_currency: str = "EUR"
    country: str | None = None
    channel: str | None = None
    mcc: str | None = None
    ip: str | None = None
    instrument: str | None = None
    users: Table | None = None
    signup: Time | None = None
    home_country: str | None = None
    merchants: Table | None = None
    devices: Table | None = None

    def __post_init__(self) -> None:
        ev = self.transactions
        for entity in ("user_id", "merchant_id"):
            if entity not in ev.keys:
                raise ValueError(
                    f"Payments: transactions {ev.name!r} has no {entity!r} key "
                    f"(keys={{'user_id': <customer column>, 'merchant_id': <merchant or terminal column>}})"
                )
        unknown = sorted(set(ev.keys) - {"user_id", "merchant_id", "device_id"})
        if unknown:
            raise ValueError(
                f"Payments: transactions keys {unknown}: expected user_id, merchant_id, device_id"
            )
        for name in ("transaction_id", "amount", "label", "currency", "country", "channel", "mcc", "ip",
                     "instrument", "home_country"):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                identifier(value, f"Payments({name}=...)")
        if self.amount_unit not in ("major", "minor"):
            raise ValueError(f"Payments(amount_unit={self.amount_unit!r}): expected 'major' or 'minor'")
        seconds(self.label_delay)
        from decision_service.features.currencies import CURRENCIES

        if self.default_currency not in CURRENCIES:
            raise ValueError(
                f"Payments(default_currency={self.default_currency!r}): not a known ISO 4217 code"
            )
        if (self.signup is not None or self.home_country is not None) and self.users is None:
            raise ValueError("Payments: signup / home_country are columns of users=Table(...): declare it")
        clash = sorted(set(STANDARD_COLUMNS) & set(ev.derived))
        if clash:
            raise ValueError(
                f"Payments: transactions {ev.name!r} derives {clash}: names the standard features use"
            )

    @property
    def has_device(self) -> bool:
        return "device_id" in self.transactions.keys

    @property
    def has_home(self) -> bool:
        return self.home_country is not None

    @property
    def has_abroad(self) -> bool:
        return self.home_country is not None and self.country is not None


@dataclass(frozen=True)
class FraudFeatures:
    """What ``fraud_features`` builds: the standard fraud groups over a Payments contract.

    ``device`` is None when the table has no device column. ``left_out``: (feature, why) of
    every standard feature the table cannot feed."""

    payments: Payments
    source: Events  # the payments source with the standard derived columns
    user: FeatureGroup
    merchant: FeatureGroup
    device: FeatureGroup | None
    velocity: OnDemandGroup
    request: OnDemandGroup
    neighbours: OnDemandGroup
    neighbour_columns: tuple[str, ...]
    model_features: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...] = ()

    @property
    def groups(self) -> tuple[FeatureGroup, ...]:
        return tuple(g for g in (self.user, self.merchant, self.device) if g is not None)

    @property
    def on_demand(self) -> tuple[OnDemandGroup, ...]:
        return (self.velocity, self.request, self.neighbours)

    def exports(self) -> dict[str, object]:
        """The names the fraud code imports from ``decision_service.features.definitions``."""
        return {
            "PAYMENTS": self.payments,
            "FRAUD_USER": self.user,
            "MERCHANT": self.merchant,
            "DEVICE": self.device,
            "VELOCITY": self.velocity,
            "VELOCITY_WINDOWS": VELOCITY_WINDOWS,
            "FRAUD_REQUEST": self.request,
            "FRAUD_NEIGHBOURS": self.neighbours,
            "FRAUD_NEIGHBOUR_COLUMNS": self.neighbour_columns,
            "FRAUD_MODEL_FEATURES": self.model_features,
            "FRAUD_LEFT_OUT": self.left_out,
        }

    def note(self) -> str:
        """One line per left-out feature group of reasons; '' when nothing is left out."""
        by_reason: dict[str, list[str]] = {}
        for name, why in self.left_out:
            by_reason.setdefault(why, []).append(name)
        return "\n".join(f"left out ({why}): {', '.join(names)}" for why, names in by_reason.items())


# --- reasons (explanation codes) -----------------------------------------------------------

_ACCOUNT = Reason(
    "ACCOUNT_AGE", "account age is unusual for legitimate buyers", "ACCOUNT_NEW", "the account is new"
)
_USER_HISTORY = Reason(
    "USER_HISTORY_UNUSUAL",
    "unusual purchase history",
    "USER_LITTLE_HISTORY",
    "the user has little purchase history",
)
_USER_AMOUNTS = Reason("USER_AMOUNT_PROFILE", "the user's usual amounts are typical of fraud")
_MERCHANT = Reason("MERCHANT_HIGH_RISK", "the merchant has a high chargeback rate")
_MERCHANT_PROFILE = Reason(
    "MERCHANT_PROFILE", "merchant profile typical of fraud", "MERCHANT_NEW", "the merchant has little history"
)
_DEVICE_NEW = Reason(
    "DEVICE_AGE", "device age typical of fraud", "DEVICE_NEW", "the device was first seen recently"
)
_USER_VELOCITY = Reason("USER_VELOCITY_HIGH", "many recent transactions by this user")
_DEVICE_VELOCITY = Reason("DEVICE_VELOCITY_HIGH", "many recent transactions from this device")

_NO_DEVICE = "no device column: declare keys={'device_id': ...} on the payments source"
_NO_SIGNUP = "no sign-up time: declare Payments(users=Table(...), signup=Time(...))"
_NO_HOME = "no home country: declare Payments(users=Table(...), home_country=...)"
_NO_COUNTRY = "no payment country: declare Payments(country=...)"
_NO_CHANNEL = "no channel column: declare Payments(channel=...)"


def _amount_eur_sql(p: Payments) -> str:
    """SQL: the amount in EUR major units (features.fraud.amount_eur's formula, per row)."""
    from decision_service.features.currencies import CURRENCIES

    amount = f"TRY_CAST({p.amount} AS DOUBLE)"
    if p.currency is None:
        exponent, rate = CURRENCIES[p.default_currency]
        scale = rate / 10.0**exponent if p.amount_unit == "minor" else rate
        return f"{amount} * {scale!r}"
    arms = []
    for code, (exponent, rate) in CURRENCIES.items():
        if p.amount_unit == "minor":
            arms.append(f"WHEN '{code}' THEN {amount} / pow(10, {exponent}) * {rate!r}")
        else:
            arms.append(f"WHEN '{code}' THEN {amount} * {rate!r}")
    return f"CASE upper(trim({p.currency})) {' '.join(arms)} END"


def fraud_features(p: Payments) -> FraudFeatures:
    """The standard fraud groups over ``p`` (see the module docstring); pure, reads nothing."""
    left_out: list[tuple[str, str]] = []
    ev = p.transactions
    derived = dict(ev.derived)
    derived["amount_eur"] = _amount_eur_sql(p)
    derived["log_amount_eur"] = "ln(1 + greatest(amount_eur, 0))"
    lookups = list(ev.lookups)
    users = p.users
    if p.has_home:
        assert users is not None
        users = dataclasses.replace(
            users, derived={**users.derived, "home_alpha2": f"upper(trim({p.home_country}))"}
        )
        if p.country is not None:
            lookups.append(Lookup(users, on=ev.keys["user_id"], columns=("home_alpha2",)))
            derived["abroad"] = f"CAST(upper(trim({p.country})) <> home_alpha2 AS DOUBLE)"
    # when the label became known, in epoch ms: its own time, else label_delay after the payment
    if p.label_time is not None:
        arrival = time_sql(p.label_time.column, p.label_time, alias=None)
    else:
        arrival = f"{time_sql(ev.time.column, ev.time, alias=None)} + {round(seconds(p.label_delay) * 1000)}"
    # TRY_CAST: a label or amount that is not one is validate_payments' error (naming the row),
    # not a failed query
    derived["chargeback_at"] = f"CASE WHEN coalesce(TRY_CAST({p.label} AS BOOLEAN), false) THEN {arrival} END"
    # a payment without a device (card present, an old export): NULL device id, no device party
    optional = tuple(dict.fromkeys(ev.optional_keys + (("device_id",) if p.has_device else ())))
    source = dataclasses.replace(ev, derived=derived, lookups=tuple(lookups), optional_keys=optional)
    chargebacks_90d = Count("90d", time=Time("chargeback_at", "ms"), closed="left")

    # ------------------------------------------------------------------ FRAUD_USER
    user_features: list[Feature] = []
    if p.signup is not None:
        user_features.append(
            Feature(
                "fu_account_age_days",
                "days since sign-up",
                default=0.0,
                reason=_ACCOUNT,
                compute=TimeSinceAttribute(p.signup.column, column_unit=p.signup.unit),
            )
        )
    else:
        left_out.append(("fu_account_age_days", _NO_SIGNUP))
    user_features += [
        Feature(
            "fu_txn_count_30d",
            "transactions in the last 30 days",
            reason=_USER_HISTORY,
            compute=Count("30d", closed="left"),
        ),
        Feature("fu_txn_count_total", "transactions ever", reason=_USER_HISTORY, compute=Count()),
        Feature(
            "fu_amount_mean_log",
            "mean log1p(amount EUR) of past transactions",
            default=3.4,
            compute=Mean(of="log_amount_eur"),
            reason=_USER_AMOUNTS,
        ),
        Feature(
            "fu_amount_std_log",
            "std of log1p(amount EUR) of past transactions",
            default=0.6,
            compute=Std(of="log_amount_eur", min_count=2),  # one transaction: the default
            reason=_USER_AMOUNTS,
        ),
    ]
    if p.has_home:
        user_features.append(
            Feature(
                "fu_home_country",
                "home country (features.fraud.country_code)",
                default=-1.0,
                categorical=True,
                compute=Attribute("home_alpha2", vocabulary=ISO_ALPHA2),
            )
        )
    else:
        left_out.append(("fu_home_country", _NO_HOME))
    if p.has_abroad:
        user_features.append(
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
            )
        )
    else:
        left_out.append(("fu_foreign_share", _NO_HOME if p.country is not None else _NO_COUNTRY))
    if p.has_device:
        user_features.append(
            Feature(
                "fu_new_devices_30d",
                "devices first used by the user in the last 30 days",
                compute=FirstSeenCount("30d", of=ev.keys["device_id"], closed="left"),
                reason=Reason("USER_MANY_NEW_DEVICES", "the user switched devices often recently"),
            )
        )
    else:
        left_out.append(("fu_new_devices_30d", _NO_DEVICE))
    user_features += [
        Feature(
            "fu_chargebacks_90d",
            "chargebacks received in the last 90 days",
            compute=chargebacks_90d,
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
    ]
    user = FeatureGroup(
        name="fraud_user",
        entity="user_id",
        max_age_s=2 * DAY_S,
        description="Payment profile of a user: usual amounts, history, chargebacks"
        + (", account age" if p.signup is not None else "")
        + (", home country" if p.has_home else "")
        + ".",
        features=tuple(user_features),
        source=GroupSource(source, users),
    )

    # ------------------------------------------------------------------ MERCHANT
    merchant = FeatureGroup(
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
                    chargebacks_90d, Count("90d", closed="left"), prior=M_CHARGEBACK_PRIOR, prior_weight=20
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
        source=GroupSource(source, p.merchants),
    )

    # ------------------------------------------------------------------ DEVICE
    device: FeatureGroup | None = None
    device_features = ("d_age_days", "d_txn_count_30d", "d_new_users_30d", "d_chargebacks_90d")
    if p.has_device:
        device = FeatureGroup(
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
                    compute=FirstSeenCount("30d", of=ev.keys["user_id"], closed="left"),
                ),
                Feature(
                    "d_chargebacks_90d",
                    "chargebacks on the device's transactions over 90 days",
                    reason=Reason("DEVICE_PRIOR_CHARGEBACKS", "the device is linked to chargebacks"),
                    compute=chargebacks_90d,
                ),
            ),
            source=GroupSource(source, p.devices),
        )
    else:
        left_out += [(f, _NO_DEVICE) for f in device_features]

    # ------------------------------------------------------------------ VELOCITY
    parties = [("user", _USER_VELOCITY)] + ([("device", _DEVICE_VELOCITY)] if p.has_device else [])
    velocity_features = []
    for party, reason in parties:
        for label, _ in VELOCITY_WINDOWS:
            velocity_features.append(
                Feature(
                    f"v_{party}_count_{label}", f"{party}'s transactions in the last {label}", reason=reason
                )
            )
            velocity_features.append(
                Feature(
                    f"v_{party}_sum_{label}", f"{party}'s amount (EUR) in the last {label}", reason=reason
                )
            )
    if not p.has_device:
        left_out += [
            (f"v_device_{kind}_{label}", _NO_DEVICE)
            for label, _ in VELOCITY_WINDOWS
            for kind in ("count", "sum")
        ]
    velocity = OnDemandGroup(
        name="velocity",
        inputs=("txn_events:user",) + (("txn_events:device",) if p.has_device else ()),
        description="Counts and sums of a user's"
        + (" and a device's" if p.has_device else "")
        + " earlier transactions per window; read fresh per request from Redis event sets "
        "(features/redis_store.py).",
        features=tuple(velocity_features),
    )

    # ------------------------------------------------------------------ FRAUD_REQUEST
    request_features = [
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
    ]
    if p.has_device:
        request_features.append(
            Feature(
                "r_new_device",
                "1 if the user never used this device before",
                reason=Reason("NEW_DEVICE", "first transaction of this user on this device"),
            )
        )
    else:
        left_out.append(("r_new_device", _NO_DEVICE))
    if p.has_abroad:
        request_features.append(
            Feature(
                "r_foreign_country",
                "1 if the country differs from the user's home country",
                reason=Reason("FOREIGN_COUNTRY", "transaction country differs from the home country"),
            )
        )
    else:
        left_out.append(("r_foreign_country", _NO_HOME if p.country is not None else _NO_COUNTRY))
    request_features.append(
        Feature(
            "r_hour_of_day",
            "hour of day (UTC) of occurred_at",
            reason=Reason("UNUSUAL_HOUR", "time of day typical of fraud"),
        )
    )
    if p.channel is not None:
        request_features.append(
            Feature(
                "r_channel",
                "channel (decision.v1.Channel number)",
                categorical=True,
                reason=Reason("CHANNEL_RISK", "channel typical of fraud"),
            )
        )
    else:
        left_out.append(("r_channel", _NO_CHANNEL))
    request = OnDemandGroup(
        name="fraud_request",
        inputs=("request", "fraud_user", "merchant") + (("user_devices",) if p.has_device else ()),
        description="Features of the transaction itself, relative to the user and merchant profiles.",
        features=tuple(request_features),
    )

    neighbours = OnDemandGroup(
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
    present = {
        f.name for g in (user, merchant, device, velocity, request) if g is not None for f in g.features
    }
    neighbour_columns = tuple(
        c
        for c in (
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
        if c in present
    )
    model_features = tuple(
        [c for c in user.columns if c != "fu_home_country"]
        + merchant.columns
        + (device.columns if device is not None else [])
        + velocity.columns
        + request.columns
        + neighbours.columns
    )
    return FraudFeatures(
        payments=p,
        source=source,
        user=user,
        merchant=merchant,
        device=device,
        velocity=velocity,
        request=request,
        neighbours=neighbours,
        neighbour_columns=neighbour_columns,
        model_features=model_features,
        left_out=tuple(left_out),
    )


def project_left_out() -> dict[str, str]:
    """The active project's left-out fraud features and why (feature -> reason: what a model
    version records in its manifest); {} when it declares its fraud groups by hand."""
    from decision_service.features import definitions  # the active project's (imports this module)

    return dict(vars(definitions).get("FRAUD_LEFT_OUT", ()))
