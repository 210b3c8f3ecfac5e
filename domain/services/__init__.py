"""The service layer, one module per feature over a small base (docs/decisions.md #29).

`domain/application.py` assembles them into the `Ledger` facade: callers reach
a feature by its name (`ledger.snapshots.take(...)`), the same name the API,
the CLI and the projections use for it.
"""
