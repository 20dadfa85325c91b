"""The Hyena-LR modal filter: its explicit form, and the recurrent state that carries it across chunks."""

from .reference import (modal_filter_ref, modal_recurrence_ref, modal_state_output_ref,
                        modal_state_update_ref)

__all__ = ["modal_filter_ref", "modal_recurrence_ref", "modal_state_output_ref", "modal_state_update_ref"]
