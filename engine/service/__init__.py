"""HTTP services over the engine: the generation endpoint (`gen404 serve`) and the local
validation service. Shared request rules (bind, API key, body size) live in security.py.
"""


def package_version() -> str:
    """The installed gen404 version ("unknown" when not installed); both services report it."""
    try:
        from importlib.metadata import version

        return version("gen404")
    except Exception:
        return "unknown"
