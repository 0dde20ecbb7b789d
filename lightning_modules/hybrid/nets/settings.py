"""The net target's schema, found here by hylab.settings.schema_for (it looks beside the target)."""

from lightning_modules.hybrid.settings import HybridNetSettings

SCHEMAS = {"hybrid_net": HybridNetSettings}
