"""Known currencies: ISO 4217 code -> (minor unit exponent, reference EUR per unit).

Used by the request edge (amounts to EUR), features.fraud and the payments contract
(features/payments.py, which generates the same conversion as SQL). Imports nothing of the
project, so a project's features.py can use it.
"""

from __future__ import annotations

import numpy as np

CURRENCIES: dict[str, tuple[int, float]] = {
    # ISO 4217 code: (minor unit exponent, reference EUR per unit)
    "EUR": (2, 1.0),
    "USD": (2, 0.92),
    "GBP": (2, 1.17),
    "CHF": (2, 1.04),
    "SEK": (2, 0.088),
    "NOK": (2, 0.086),
    "DKK": (2, 0.134),
    "PLN": (2, 0.23),
    "CZK": (2, 0.04),
    "HUF": (2, 0.0025),
    "RON": (2, 0.2),
    "TRY": (2, 0.028),
    "CAD": (2, 0.68),
    "AUD": (2, 0.61),
    "NZD": (2, 0.56),
    "JPY": (0, 0.0062),
    "KRW": (0, 0.00068),
    "CNY": (2, 0.13),
    "HKD": (2, 0.118),
    "SGD": (2, 0.69),
    "INR": (2, 0.011),
    "BRL": (2, 0.17),
    "MXN": (2, 0.054),
    "ZAR": (2, 0.05),
    "NGN": (2, 0.0006),
    "AED": (2, 0.25),
    "SAR": (2, 0.245),
    "KWD": (3, 3.0),
    "BHD": (3, 2.44),
    "RUB": (2, 0.01),
}
"""Known currencies. The reference rates only normalise amounts for features (a deployment
would refresh them daily); decisions never depend on their exactness."""


def amount_eur(amount_minor: int | np.ndarray, currency: str | np.ndarray) -> np.ndarray:
    """Amount in EUR major units. Contract: every currency is a key of CURRENCIES."""
    cur = np.atleast_1d(np.asarray(currency))
    exp = np.array([CURRENCIES[c][0] for c in cur.tolist()], dtype=np.float64)
    rate = np.array([CURRENCIES[c][1] for c in cur.tolist()], dtype=np.float64)
    return np.asarray(amount_minor, dtype=np.float64) / 10.0**exp * rate
