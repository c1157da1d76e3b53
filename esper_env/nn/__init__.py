"""The torch layer of esper_env: blueprints, hosts, seed slots, task data and the trainer."""

from esper_env.nn.blueprints import BLUEPRINTS, blueprint_param_count, build_blueprint
from esper_env.nn.data import TaskData
from esper_env.nn.hosts import CNNHost, InjectionPoint
from esper_env.nn.model import MorphogeneticModel
from esper_env.nn.slots import SeedSlot
from esper_env.nn.trainer import Trainer

__all__ = [
    "BLUEPRINTS", "CNNHost", "InjectionPoint", "MorphogeneticModel", "SeedSlot", "TaskData",
    "Trainer", "blueprint_param_count", "build_blueprint",
]
