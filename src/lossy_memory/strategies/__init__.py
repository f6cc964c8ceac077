"""Continual-learning strategies, one small file each behind one interface (``ContinualStrategy``), and the episodic
memory they share (``EpisodicMemory``: lossless images, recollections, or both, under one bit budget)."""

from lossy_memory.strategies.agem import AGEM, agem_project
from lossy_memory.strategies.base import ContinualStrategy, StrategyContext
from lossy_memory.strategies.condensed import CondensedReplay
from lossy_memory.strategies.derpp import DERPP
from lossy_memory.strategies.finetune import OnlineFineTuning
from lossy_memory.strategies.gem import GEM, project_to_cone
from lossy_memory.strategies.icarl import ICaRL
from lossy_memory.strategies.memory import EpisodicMemory, Replayed
from lossy_memory.strategies.replay import ExperienceReplay

__all__ = ["AGEM", "DERPP", "GEM", "CondensedReplay", "ContinualStrategy", "EpisodicMemory", "ExperienceReplay", "ICaRL", "OnlineFineTuning",
           "Replayed", "StrategyContext", "agem_project", "project_to_cone"]
