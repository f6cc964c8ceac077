"""Continual-learning strategies, one small file each behind one interface (``ContinualStrategy``), and the lean step
(``ContinualStep``) that runs one incoming batch through a strategy and the memory's online generator. The memory
they share lives in ``lossy_memory.memory`` (``EpisodicMemory``)."""

from lossy_memory.strategies.agem import AGEM, agem_project
from lossy_memory.strategies.base import ContinualStrategy, StrategyContext
from lossy_memory.strategies.condensed import CondensedReplay
from lossy_memory.strategies.derpp import DERPP
from lossy_memory.strategies.finetune import OnlineFineTuning
from lossy_memory.strategies.gem import GEM, project_to_cone
from lossy_memory.strategies.icarl import ICaRL
from lossy_memory.strategies.replay import ExperienceReplay
from lossy_memory.strategies.step import ContinualStep

__all__ = ["AGEM", "DERPP", "GEM", "CondensedReplay", "ContinualStep", "ContinualStrategy", "ExperienceReplay", "ICaRL",
           "OnlineFineTuning", "StrategyContext", "agem_project", "project_to_cone"]
