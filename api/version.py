"""The one version string of snapledger.

pyproject.toml reads it (`[tool.setuptools.dynamic]`), so the wheel's
metadata, `snapledger --version`, `GET /info`, the OpenAPI document and the
`snapledger_build_info` metric all say the same thing."""

VERSION = "0.2.0"
