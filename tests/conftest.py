"""Shared test configuration. Fixtures live in tests/fixtures/, one module per outside system."""

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.comfy_emulator",
    "tests.fixtures.ollama_emulator",
    "tests.fixtures.temporal_env",
    "tests.fixtures.store",
]
