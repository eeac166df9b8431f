"""Structured filter pruning: channel groups, criteria, soft / hard masks, physical removal."""
from .criteria import CRITERIA, collect_features, get_criterion, plan_keeps, select_keep  # noqa: F401
from .groups import Group, Plan, build_plan, check_ratio  # noqa: F401
from .masks import ChannelMasks  # noqa: F401
from .removal import kept_channels, remove_channels  # noqa: F401
