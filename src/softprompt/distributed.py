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
"""

from __future__ import annotations

import time

import torch


class Dist:
    def __init__(self, accelerator):
        self.acc = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.enabled = self.world > 1
        self.is_main = accelerator.is_main_process

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
        """Run ``fn`` on rank 0 only; every rank gets its result (it must be picklable)."""
        if not self.enabled:
            return fn()
        from accelerate.utils import broadcast_object_list

        box = [fn() if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

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
