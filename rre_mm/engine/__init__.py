"""MMEngine integration: checkpoint loading under torch >= 2.6 and run hooks."""
from .checkpoint_globals import (getattr_history_buffer_statistic,
                                 mmengine_checkpoint_globals,
                                 register_mmengine_checkpoint_globals)
from .time_budget_hook import TimeBudgetHook

# Importing rre_mm (e.g. through custom_imports) is all a user does, so the
# checkpoint fix must take effect here.
register_mmengine_checkpoint_globals()

__all__ = [
    'TimeBudgetHook', 'getattr_history_buffer_statistic',
    'mmengine_checkpoint_globals', 'register_mmengine_checkpoint_globals'
]
