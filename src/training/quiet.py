"""Keep the console to what a user can act on: narrow filters for messages that are not theirs.

Each filter names the module and the message it silences; nothing else is touched.
"""

from __future__ import annotations

import logging
import warnings

# Lightning advertises its cloud products ("💡 Tip: ... try installing litlogger/litmodels")
# at INFO on every run; nothing in them concerns this project.
_LIGHTNING_TIPS = "💡 Tip:"


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LIGHTNING_TIPS)


def install() -> None:
    """Install the filters (idempotent); called by the entry points."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    # Lightning 2.6 builds torch's deprecated LeafSpec on every logged batch (its own copy of
    # tree_flatten); torch warns each time. Lightning's to fix, not the user's.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )
    # The model summary estimates sizes in 32 bits under bf16-mixed (trainer=gpu's default,
    # trainer.precision=bf16-mixed on CPU) and says so on every run; parameters are fp32 anyway.
    warnings.filterwarnings(
        "ignore",
        message=r"Precision bf16-mixed is not supported by the model summary",
        category=UserWarning,
        module=r"pytorch_lightning\.utilities\.model_summary",
    )
