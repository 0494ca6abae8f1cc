"""A minimal payments table and the standard fraud features over it.

``data/payments.csv`` (make_data.py writes it), one row per card payment:

  tx_id              the transaction id
  tx_datetime        when it happened, ISO 8601 UTC ("2026-01-03T10:15:02Z")
  customer_id        the cardholder
  terminal_id        the merchant's terminal
  tx_amount          the amount in EUR (major units: 12.50)
  tx_fraud           1 = fraud (a chargeback), 0 = not
  fraud_reported_at  when the fraud was reported (empty when not fraud)

The contract (decision_service/features/payments.py) builds the customer and terminal
profiles, the customer's velocity windows, request features and nearest-neighbour features
from these columns alone; device, country, channel and sign-up features are left out (the
table has no such columns), and bootstrap prints which.

Loaded as decision_service.features.definitions when this project is active.
"""

from __future__ import annotations

from decision_service.features.declarative import Events, Time
from decision_service.features.payments import Payments, fraud_features
from decision_service.features.registry import FeatureRegistry

PAYMENTS = Payments(
    Events(
        "payments",
        "payments.csv",
        Time("tx_datetime", "timestamp"),
        format="csv",
        keys={"user_id": "customer_id", "merchant_id": "terminal_id"},
    ),
    transaction_id="tx_id",
    amount="tx_amount",  # EUR, major units (Payments(currency=...) for a currency column)
    label="tx_fraud",
    label_time=Time("fraud_reported_at", "timestamp"),
)
FRAUD = fraud_features(PAYMENTS)
REGISTRY = FeatureRegistry(groups=FRAUD.groups, on_demand=FRAUD.on_demand)
