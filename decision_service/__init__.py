"""Decision service: recommendation and fraud decisions over gRPC, and the data loop behind them."""

__version__ = "0.1.0"
