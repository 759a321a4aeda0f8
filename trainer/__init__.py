"""trainer: multi-layer nets and the classic training techniques in NumPy alone.

One entry point drives it: `fit(config, train, validation, callback)` returns the trained
network and its history. See docs/CONTRACTS.md for what `hpo` may rely on.
"""

from ._config import (
    ACTIVATIONS,
    FIELD_RULES,
    INITIALIZERS,
    OPTIMIZERS,
    ConfigError,
    Flag,
    Integer,
    OneOf,
    Real,
    Rule,
    Sizes,
    TrainConfig,
)
from ._datasets import REGISTRY, DataError, Dataset, DatasetInfo
from ._download import FileCheck, download, verify
from ._idx import read_idx
from ._load import load_test_split, load_training_pool
from ._lookup import Location, cache_root, list_datasets, locate
from ._splits import split_train_validation, stratified_folds
from ._init import initial_weights, weight_std
from ._layers import (
    Affine,
    BatchNorm,
    Dropout,
    FlatParameters,
    Layer,
    Parameter,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)
from ._network import Network, build_network, seed_streams
from ._optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, Optimizer, RMSProp, make_optimizer
from ._train import EpochMetrics, FitResult, History, evaluate, fit

__all__ = [
    # configuration
    "ACTIVATIONS",
    "FIELD_RULES",
    "INITIALIZERS",
    "OPTIMIZERS",
    "ConfigError",
    "Flag",
    "Integer",
    "OneOf",
    "Real",
    "Rule",
    "Sizes",
    "TrainConfig",
    # data
    "REGISTRY",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "FileCheck",
    "Location",
    "cache_root",
    "download",
    "list_datasets",
    "load_test_split",
    "load_training_pool",
    "locate",
    "read_idx",
    "split_train_validation",
    "stratified_folds",
    "verify",
    # layers and initial weights
    "Affine",
    "BatchNorm",
    "Dropout",
    "FlatParameters",
    "Layer",
    "Parameter",
    "ReLU",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "initial_weights",
    "weight_std",
    # optimizers
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSProp",
    "make_optimizer",
    # networks and training
    "EpochMetrics",
    "FitResult",
    "History",
    "Network",
    "build_network",
    "evaluate",
    "fit",
    "seed_streams",
]
