"""PyTorch eager Runner (the fp32 reference every export is compared against)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from edgeseg.runtime.base import Runner, check_batch, normalize_nhwc


class TorchRunner(Runner):
    runtime = "pytorch"
    formats = ("checkpoint",)

    def __init__(self, model: nn.Module, *, input_size, mean, std, threads: int | None = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.height, self.width = input_size
        self.mean, self.std = mean, std
        self.threads = threads
        self.device = device

    @classmethod
    def from_checkpoint(cls, ckpt, threads: int | None = None) -> "TorchRunner":
        info = ckpt.info
        return cls(ckpt.model(), input_size=info.input_size, mean=info.mean, std=info.std, threads=threads)

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> np.ndarray:
        images = check_batch(images, self.height, self.width)
        x = torch.from_numpy(normalize_nhwc(images, self.mean, self.std)).permute(0, 3, 1, 2).to(self.device)
        if self.threads:
            prev = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                return self.model(x).float().cpu().numpy()
            finally:
                torch.set_num_threads(prev)
        return self.model(x).float().cpu().numpy()
