"""Evaluation under ``torchrun``: each process scores its share, the results are gathered.

SpeechBrain's DDP splits the training set across processes and leaves
validation and test whole on every process. The recipes split them too (each
clip on exactly one process, none repeated) and gather what the metrics
need, so WA/UA/WER come out as one process would compute them on the whole
set. Without a process group every function here is the identity.

Example
-------
>>> shard = EvaluationShard(5, rank=1, world_size=2)
>>> list(shard), len(shard)
([1, 3], 2)
>>> gather_lists(["a", "b"])  # one process: nothing to gather
['a', 'b']
>>> mean_over_processes(0.5, count=4)
0.5
"""

import gc
import os
import socket
from typing import Dict, Iterator, List, Optional, Sequence

import speechbrain as sb
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def rank_and_world_size():
    """This process's rank and the number of processes (0 and 1 without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EvaluationShard(torch.utils.data.Sampler):
    """Items ``rank, rank + world_size, ...`` of a dataset: each item on one process, no padding.

    Arguments
    ---------
    num_items : int
        Length of the dataset (kept in its order, e.g. sorted by duration).
    rank, world_size : int, optional
        Default: those of the initialized process group (0 and 1 without one).
    """

    def __init__(self, num_items: int, *, rank: Optional[int] = None, world_size: Optional[int] = None):
        super().__init__()
        default_rank, default_world_size = rank_and_world_size()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        self.indices = list(range(self.rank, num_items, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def evaluation_loader_kwargs(dataset, loader_kwargs: dict) -> dict:
    """``loader_kwargs`` with this process's :class:`EvaluationShard` as sampler (unchanged without DDP)."""
    if rank_and_world_size()[1] == 1:
        return loader_kwargs
    if "sampler" in loader_kwargs or "batch_sampler" in loader_kwargs:
        raise ValueError(
            "evaluation loader kwargs: a sampler cannot be combined with torchrun, which "
            "splits the validation and test sets across processes itself"
        )
    return {**loader_kwargs, "sampler": EvaluationShard(len(dataset))}


def gather_lists(values: Sequence) -> List:
    """Every process's ``values`` (picklable), concatenated in rank order."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return list(values)
    gathered: List = [None] * world_size
    torch.distributed.all_gather_object(gathered, list(values))
    return [value for part in gathered for value in part]


def mean_over_processes(mean: float, *, count: int) -> float:
    """The mean over every process's items, from each process's ``mean`` of its ``count`` items."""
    pairs = gather_lists([(float(mean), int(count))])
    total = sum(n for _, n in pairs)
    return sum(m * n for m, n in pairs) / total if total else float(mean)


def environment_for_child_group() -> Dict[str, str]:
    """``os.environ`` for a child script that forms a process group of its own.

    Under torchrun, a script that runs another distributed script per step
    (run_folds.py: ``train.py`` per fold, on every process) gives each step
    a new rendezvous port, picked by the main process and shared: each
    step's group then starts from an empty store, whatever the last one left
    there. Needs this process's group (gloo is enough). Without torchrun:
    ``os.environ`` unchanged.
    """
    env = dict(os.environ)
    if rank_and_world_size()[1] == 1:
        return env
    port = None
    if torch.distributed.get_rank() == 0:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
    shared = [port]
    torch.distributed.broadcast_object_list(shared, src=0)
    env["MASTER_PORT"] = str(shared[0])
    env.pop("TORCHELASTIC_USE_AGENT_STORE", None)  # the child's rank 0 hosts its own store
    return env


def end_process_group() -> None:
    """Waits for every process, then closes the process group: a clean exit under torchrun.

    Delete the Brain first: its DDP wrappers hold the group, and collected
    here, while Python is fully alive, gloo's threads end cleanly (collected
    at interpreter exit they can abort the process).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        gc.collect()
        torch.distributed.destroy_process_group()


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (the module itself otherwise)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


class DistributedBrainMixin:
    """Mixin of a ``speechbrain.core.Brain`` for torchrun runs, before ``Brain`` in the bases.

    - Validation and test loaders read this process's :class:`EvaluationShard`;
      ``evaluation_items`` is then the number of clips this process evaluates,
      and the Brain gathers its metrics in ``on_stage_end`` (:func:`gather_lists`).
    - On CPU (gloo) the modules are wrapped in DDP without SpeechBrain's
      SyncBatchNorm conversion, which runs on GPUs only: each process keeps
      its own batch statistics and DDP broadcasts the main process's buffers.
    """

    evaluation_items = 0

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        if stage != sb.Stage.TRAIN:
            loader_kwargs = evaluation_loader_kwargs(dataset, loader_kwargs)
            sampler = loader_kwargs.get("sampler")
            self.evaluation_items = len(sampler) if isinstance(sampler, EvaluationShard) else len(dataset)
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def _wrap_distributed(self):
        if not (self.distributed_launch and self.device_type == "cpu"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(
                    module, find_unused_parameters=self.find_unused_parameters
                )
