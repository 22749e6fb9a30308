"""Data-parallel training through accelerate's process group (gloo on CPU, NCCL on GPUs).

Launch with ``torchrun --nproc_per_node N -m softprompt train ...``, ``accelerate launch
--multi_gpu --num_processes N -m softprompt train ...`` or ``softprompt train ... --num-processes N``.

What each rank does (the trainer calls these; with one process they do nothing):

- ``shard``: every global batch (the same on all ranks: it is a function of seed and epoch) is
  split by rank, ``batch[rank::world]``; rollouts and rewards run on each rank's shard.
- ``sync_grads``: after backward, one all-reduce of the flattened trainable gradients, each
  rank's weighted by its number of examples, so the update is the global batch's mean gradient
  and every rank applies the same one (the prompts stay bit-identical).
- ``mean_logs``: training scalars are gathered and averaged before rank 0 logs them.
- ``from_main``: evaluation runs on rank 0 and its metrics are broadcast, so checkpoint and
  early-stopping decisions agree everywhere. Only rank 0 writes the run folder.

``train.strategy: fsdp`` also shards the frozen backbone across the ranks with PyTorch's FSDP2
(``fully_shard``: each transformer block, then the rest); ``train.strategy: deepspeed`` does the
same with DeepSpeed ZeRO stage 3 (every weight partitioned, gathered per module in forward and
backward). Either way the input and output embeddings are kept whole, since virtual tokens and
label-word scores are computed outside the model's forward, and each rank holds 1/N of the
rest. The adapter (and a classifier or value head) stays replicated and synced as above.
Every forward then gathers the blocks from all ranks, so the ranks run it together: evaluation
runs on every rank (rank 0's result is used), and generation goes on until every rank's rows
are finished.
"""

from __future__ import annotations

import time

import torch

from ..errors import ConfigError
from ..modeling.backbones import transformer_layers
from ..modeling.lockstep import lockstep_group, set_lockstep

SHARDED = ("fsdp", "deepspeed")  # strategies that shard the frozen backbone


def check_shardable(model: torch.nn.Module, strategy: str = "fsdp") -> None:
    """fsdp and deepspeed here shard a frozen backbone: refuse one with trainable weights (LoRA, unfrozen blocks)."""
    if strategy == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("train.strategy=deepspeed needs DeepSpeed: pip install 'softprompt[deepspeed]' "
                              "(or train.strategy=fsdp, which shards the backbone with PyTorch alone)")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if trainable:
        raise ConfigError(f"train.strategy={strategy} shards a frozen backbone, but {len(trainable)} of its "
                          f"parameters train ({trainable[0]}, ...: LoRA or num_layers_unfrozen); "
                          "use train.strategy=ddp")


def _local_numel(p: torch.nn.Parameter) -> int:
    """Elements of ``p`` this rank holds: its shard under FSDP2 (DTensor) or ZeRO-3, else all."""
    if hasattr(p, "to_local"):
        return p.to_local().numel()
    if getattr(p, "ds_tensor", None) is not None:
        return p.ds_tensor.numel()
    return p.numel()


def full_numel(model: torch.nn.Module) -> int:
    """The model's parameter count, whether sharded or not."""
    return sum(getattr(p, "ds_numel", None) or p.numel() for p in model.parameters())  # a DTensor counts all


class Dist:
    def __init__(self, accelerator):
        self.acc = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.enabled = self.world > 1
        self.is_main = accelerator.is_main_process
        self.backbone_local_numel: int | None = None  # set when the backbone is sharded

    @property
    def lockstep(self) -> bool:
        """True once this process group's backbone is sharded (fsdp or deepspeed)."""
        return lockstep_group() is self

    def shard_backbone(self, model: torch.nn.Module, strategy: str = "fsdp") -> None:
        """Shard a frozen HF model across the ranks (``fsdp`` or ``deepspeed``); the input embeddings
        and the output embeddings (often tied to them) stay whole on each rank."""
        check_shardable(model, strategy)
        if not self.enabled:
            return
        if strategy == "deepspeed":
            self._zero3(model)
        else:
            self._fsdp(model)
        set_lockstep(self)
        # what each rank holds, counted now: after a forward FSDP2 leaves the root's own parameters
        # (the final norm) gathered until the next backward, so a later count would vary
        self.backbone_local_numel = sum(_local_numel(p) for p in model.parameters())

    def _fsdp(self, model: torch.nn.Module) -> None:
        """FSDP2: every transformer block, then the body as the root."""
        from torch.distributed.fsdp import fully_shard

        keep = set(model.get_input_embeddings().parameters())
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        keep |= set(out.parameters()) if out is not None else set()
        for layer in transformer_layers(model):
            fully_shard(layer)
        # the body is the FSDP root (classifiers call it without the LM head's wrapper); the wrapper
        # itself holds only the output embeddings, kept whole
        fully_shard(model.base_model, ignored_params=keep)

    def _zero3(self, model: torch.nn.Module) -> None:
        """DeepSpeed ZeRO stage 3 with no optimizer (the backbone is frozen; softprompt steps the
        adapter). The embeddings are detached while DeepSpeed partitions the model, then put back."""
        import os

        from torch import nn

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed  # check_shardable said whether it is installed

        inp = model.get_input_embeddings()
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        model.set_input_embeddings(nn.Identity())
        if out is not None:
            model.set_output_embeddings(nn.Identity())
        try:
            deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
            zero = {"stage": 3, "stage3_param_persistence_threshold": 0}  # every weight partitioned, as FSDP
            offload = os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none")
            if offload not in ("", "none"):
                zero["offload_param"] = {"device": offload}
            deepspeed.initialize(model=model, config={"train_micro_batch_size_per_gpu": 1,
                                                      "zero_optimization": zero})
        finally:
            model.set_input_embeddings(inp)
            if out is not None:
                model.set_output_embeddings(out)

    def release(self) -> None:
        if lockstep_group() is self:
            set_lockstep(None)

    def broadcast_params(self, params: list[torch.nn.Parameter]) -> None:
        """Rank 0's values of ``params`` on every rank (after rank 0 alone loaded a checkpoint)."""
        if not self.enabled:
            return
        from accelerate.utils import broadcast

        with torch.no_grad():
            for p in params:
                p.copy_(broadcast(p.detach().clone(), from_process=0))

    def shard(self, items: list) -> list:
        return items[self.rank::self.world] if self.enabled else items

    def sync_grads(self, params: list[torch.nn.Parameter], n_local: int) -> float:
        """Replace each gradient by the example-weighted mean over ranks; return the seconds it took."""
        if not self.enabled:
            return 0.0
        start = time.perf_counter()
        device = params[0].device
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in params] + [torch.ones(1, device=device)])
        flat[:-1] *= n_local
        flat[-1] = n_local
        flat = self.acc.reduce(flat, "sum")
        total = flat[-1].clamp(min=1)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = (flat[offset:offset + n] / total).view_as(p).to(p.dtype)
            offset += n
        return time.perf_counter() - start

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        return float(self.acc.reduce(torch.tensor([value], dtype=torch.float64, device=self.acc.device), "mean"))

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        return bool(self.acc.reduce(torch.tensor([float(flag)], device=self.acc.device), "sum") > 0)

    def mean_logs(self, logs: dict) -> dict:
        if not self.enabled:
            return logs
        from accelerate.utils import gather_object

        gathered = gather_object([logs])
        keys = {k for d in gathered for k in d}
        out = {}
        for k in keys:
            values = [d[k] for d in gathered if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool)]
            if values:
                out[k] = sum(values) / len(values)
        return out

    def from_main(self, fn):
        """Run ``fn`` on rank 0 only (on every rank in lockstep, for a sharded backbone); every rank
        gets rank 0's result (it must be picklable)."""
        if not self.enabled:
            return fn()
        from accelerate.utils import broadcast_object_list

        box = [fn() if self.is_main or self.lockstep else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def gather(self, value):
        """Every rank's ``value``, in rank order."""
        if not self.enabled:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def checksums(self, params: list[torch.nn.Parameter]) -> list[str]:
        """Each rank's SHA-256 of its trainable parameters' bytes (equal: bit-identical prompts)."""
        import hashlib

        digest = hashlib.sha256()
        for p in params:
            digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        if not self.enabled:
            return [digest.hexdigest()]
        from accelerate.utils import gather_object

        return gather_object([digest.hexdigest()])
