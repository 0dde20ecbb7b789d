"""The nets' schemas, where hylab.settings.schema_for looks for a `nets.<module>.<name>` target:
they are written once, in lightning_modules/image/settings.py."""

from lightning_modules.image.settings import SCHEMAS

__all__ = ["SCHEMAS"]
