"""Model outputs over cached images: the one inference path for validation, test, the ensemble and serving."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from chexops.data.loader import to_model_input


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    autocast: bool = False,
    channels_last: bool = False,
) -> np.ndarray:
    """Sigmoid probabilities (N, K) float32 for uint8 images (N, S, S), in large no-grad batches."""
    was_training = model.training
    model.eval()
    pin = device.type == "cuda"
    out = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start : start + batch_size]))[:, None]  # a writable copy
        if pin:
            chunk = chunk.pin_memory()
        x = to_model_input(chunk, device, mean, std, channels_last=channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        out.append(torch.sigmoid(logits.float()))  # kept on the device: one copy back at the end, no sync per batch
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).cpu().numpy()


def binary_truth(labels: np.ndarray) -> np.ndarray:
    """Evaluation truth from raw labels: positive (1) is 1; negative, uncertain and blank are 0.

    Official valid and test labels are radiologist 0/1 already; this only matters for a hold-out test split
    taken from train, where uncertain counts as not positive (the run records that its test is a hold-out).
    """
    return (np.nan_to_num(labels, nan=0.0) == 1).astype(np.int8)
