"""Writes the payments example's minimal table: a generated payments world
(offline/simulation/fraud_world.py) exported with seven columns, as a payments team would
have them (``export_minimal``).

    python examples/payments/make_data.py [--preset small] [--out examples/payments/data]

The label is the chargeback (what a team knows), reported when the chargeback arrived; the
world's other columns (device, country, currency, channel, sign-up) are not exported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from offline.simulation.fraud_world import export_minimal, fraud_preset, generate_fraud_world


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", help="fraud world preset: tiny, small, bench")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_fraud_world(fraud_preset(args.preset), tmp)
    path = args.out / "payments.csv"
    labelled = export_minimal(world, path)
    print(f"wrote {path}: {world.n:,} payments, {labelled:,} reported fraud")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
