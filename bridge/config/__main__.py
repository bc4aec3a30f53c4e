"""``python -m bridge.config``: print the README's configuration table, made from the declarations."""

from .settings import settings_table

print(settings_table(), end="")
