"""Shared test set-up: ``tests/`` is on sys.path, so tests import ``netgen``."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)  # tiny test nets: a second OpenMP thread only adds sync cost
