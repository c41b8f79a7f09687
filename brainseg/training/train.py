"""Train the segmenter or the classifier with checkpoints, resume and early stopping (``brainseg train``).

One process (CPU or GPU) or ``torchrun`` (DDP). Writes ``last.pt`` (resumable), ``<kind>.safetensors`` (best epoch,
fp16), ``<kind>_last.safetensors``, ``history.json`` and ``split.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from brainseg import metrics
from brainseg.data.dataset import Augment, EpochSampler, SliceDataset
from brainseg.data.index import (
    fold_split,
    index_dataset,
    load_folds,
    load_split,
    make_folds,
    make_split,
    save_folds,
    save_split,
    select,
)
from brainseg.errors import BrainsegError
from brainseg.io import intensity
from brainseg.models.networks import build_model
from brainseg.models.weights import load_model, save_weights

MONITORS = {"segmenter": "volume_dice", "classifier": "auc"}




def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def learning_rate(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to zero.

    Args:
        step: the optimiser step, counted from 0.
        total: steps in the whole run.
        warmup: steps of the linear warm-up.
        peak: the learning rate at the end of the warm-up.

    Returns:
        The learning rate at ``step``.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def ema_with_warmup(decay: float):
    """``multi_avg_fn`` for :class:`AveragedModel`: an EMA whose decay ramps up as min(decay, (1 + n) / (10 + n))
    after n updates, so that the average follows the model from the first epochs instead of carrying the
    random initial weights (a flat 0.998 still weighs them 19% after 820 steps: validation read 0 for 10 epochs)."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):   # integer buffers (BatchNorm's batch counter) follow the model
            torch._foreach_copy_(averaged, current)
            return
        n = float(updates)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))
    return update


def segmenter_loss(logits: torch.Tensor, masks: torch.Tensor, dice_weight: float = 0.0) -> torch.Tensor:
    """Focal Tversky over the batch plus pixel BCE (the BCE keeps tumour-free batches informative), plus
    ``dice_weight`` times the per-image Dice loss (small tumours weigh as much as large ones).

    Args:
        logits: ``Bx1xHxW`` segmenter logits.
        masks: ``Bx1xHxW`` float true masks (1 = tumour).
        dice_weight: weight of the per-image Dice loss; 0 leaves it out.

    Returns:
        Scalar loss tensor.
    """
    logits = logits.float()
    probability = torch.sigmoid(logits)
    loss = metrics.focal_tversky_loss(probability, masks) + F.binary_cross_entropy_with_logits(logits, masks)
    if dice_weight:
        loss = loss + dice_weight * metrics.per_image_dice_loss(probability, masks)
    return loss


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def validate(kind: str, model: torch.nn.Module, dataset: SliceDataset, device: torch.device, bf16: bool,
             batch_size: int = 16) -> dict[str, float]:
    """Validation loss and metrics on whole 256x256 slices (threshold 0.5).

    Args:
        kind: ``"segmenter"`` or ``"classifier"``.
        model: the network being trained (set back to train mode afterwards).
        dataset: the preloaded validation slices (their augmentation is not applied).
        device: where the model runs.
        bf16: run under bf16 autocast.
        batch_size: slices per forward pass.

    Returns:
        ``val_loss`` and ``val_metric``; for the segmenter also ``val_tversky`` (pooled over tumour slices) and
        ``volume_dice`` (mean per-volume Dice), for the classifier ``auc`` (``val_metric`` its accuracy).
    """
    model.eval()
    losses, outputs = [], []
    for start in range(0, len(dataset), batch_size):
        images = dataset.preprocessed(start, start + batch_size).to(device)
        images = images.contiguous(memory_format=torch.channels_last)
        masks = dataset.masks[start : start + batch_size].float().to(device)
        labels = dataset.labels[start : start + batch_size].to(device)
        with _autocast(device, bf16):
            logits = model(images)
        if kind == "segmenter":
            losses.append(float(segmenter_loss(logits, masks)))
            outputs.append((torch.sigmoid(logits.float()) > 0.5).cpu().numpy()[:, 0])
        else:
            losses.append(float(F.cross_entropy(logits.float(), labels)))
            outputs.append(torch.softmax(logits.float(), 1)[:, 1].cpu().numpy())
    model.train()
    result = {"val_loss": float(np.mean(losses))}
    labels = dataset.labels.numpy().astype(bool)
    if kind == "segmenter":
        predicted = np.concatenate(outputs)
        truth = dataset.masks.numpy()[:, 0] > 0
        pooled = metrics.counts(predicted[labels], truth[labels])
        volumes = metrics.volume_dice([r.patient for r in dataset.records], predicted, truth)
        result["val_tversky"] = metrics.tversky(pooled)
        result["volume_dice"] = float(np.mean(list(volumes.values())))
        result["val_metric"] = result["val_tversky"]
    else:
        scores = np.concatenate(outputs)
        result["val_metric"] = float(np.mean((scores > 0.5) == labels))
        result["auc"] = metrics.roc_auc(scores, labels)
    return result


def _split(args: argparse.Namespace, records, out: Path, rank: int) -> dict[str, list[str]]:
    if args.folds:
        if not args.split:
            raise BrainsegError("--folds needs --split (the split file whose train+val patients are folded)")
        split = load_split(args.split)
        held_out = load_folds(args.split)
        if held_out is None or len(held_out) != args.folds:
            held_out = make_folds(records, split["train"] + split["val"], args.folds, args.seed)
            if rank == 0:
                save_folds(args.split, held_out, args.seed)
        split = fold_split(split, held_out, args.fold)
        if rank == 0:
            save_split(split, out / "split.json", args.seed)
        return split
    if args.split:
        return load_split(args.split)
    if (out / "split.json").exists():
        return load_split(out / "split.json")
    split = make_split(records, seed=args.seed)
    if rank == 0:
        save_split(split, out / "split.json", args.seed)
    return split


def _teacher(args: argparse.Namespace, device: torch.device) -> torch.nn.Module | None:
    """The frozen model whose outputs on each slice as stored are the targets (``--teacher``), or ``None``."""
    if not args.teacher:
        return None
    teacher, metadata = load_model(args.teacher)
    if metadata["kind"] != args.kind:
        raise BrainsegError(f"--teacher {args.teacher} is a {metadata['kind']}, not a {args.kind}")
    teacher.eval().requires_grad_(False)
    return teacher.to(device).to(memory_format=torch.channels_last)


def train(args: argparse.Namespace) -> Path:
    """Train one model; returns the path of its best weights."""
    rank, world = _distributed()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + rank)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    bf16 = not args.no_bf16
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    main = rank == 0

    records = index_dataset(args.data, progress=main)
    split = _split(args, records, out, rank)
    if args.limit_patients:
        split = {k: v[: args.limit_patients] for k, v in split.items()}
    segmenter = args.kind == "segmenter"
    views = {"gamma": args.gamma, "flair_alone": args.flair_alone, "stored_as": args.stored_as}
    augmentation = (Augment(crop=args.crop or None, **views) if segmenter
                    else Augment(crop=None, affine_p=0.7, intensity=0.15, **views))
    teacher = _teacher(args, device)
    train_set = SliceDataset(select(records, split["train"]), augmentation, seed=args.seed, progress=main,
                             paired=teacher is not None, landmarks=intensity.load() if args.stored_as else None)
    val_set = SliceDataset(select(records, split["val"]), progress=main)
    negatives = args.negatives if args.negatives is not None else (0.5 if segmenter else None)
    sampler = EpochSampler(train_set.labels.tolist(), negatives, args.seed, rank, world)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True, num_workers=0)

    settings = {} if segmenter else {"input_size": args.input_size}
    model = build_model(args.kind, **settings)
    if args.init:
        initial, _ = load_model(args.init)
        model.load_state_dict(initial.state_dict())
    model = model.to(device).to(memory_format=torch.channels_last)
    averaged = AveragedModel(model, multi_avg_fn=ema_with_warmup(args.ema), use_buffers=True) if args.ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    history: list[dict] = []
    best, start_epoch = -math.inf, 0
    if args.resume:
        state = torch.load(args.resume, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if averaged is not None:
            averaged.load_state_dict(state["ema"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
    trained = DistributedDataParallel(model) if world > 1 else model
    steps_per_epoch = max(len(loader) if not args.max_steps else min(len(loader), args.max_steps), 1)
    total_steps, warmup = args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch)
    monitor = MONITORS[args.kind]
    began = time.time()
    stale = 0
    if history:
        best_epoch = max(range(len(history)), key=lambda i: history[i][monitor])
        stale = len(history) - 1 - best_epoch

    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        tick = time.time()
        losses, scores = [], []
        bar = tqdm(loader, total=steps_per_epoch, desc=f"{args.kind} epoch {epoch + 1}/{args.epochs}", disable=not main)
        for step, (images, masks, labels) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            lr = learning_rate(epoch * steps_per_epoch + step, total_steps, warmup, args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(device).contiguous(memory_format=torch.channels_last)
            masks, labels = masks.to(device), labels.to(device)
            targets = None
            if teacher is not None:
                images, plain = images[:, :3], images[:, 3:]
                with torch.no_grad(), _autocast(device, bf16):
                    targets = teacher(plain).float()
            with _autocast(device, bf16):
                logits = trained(images)
            if segmenter:
                truth = masks if targets is None else torch.sigmoid(targets)
                loss = segmenter_loss(logits, truth, args.dice_weight)
                score = float(metrics.soft_tversky((torch.sigmoid(logits.float()) > 0.5).float(), masks, smooth=1.0))
            else:
                loss = (F.cross_entropy(logits.float(), labels, label_smoothing=0.05) if targets is None
                        else F.cross_entropy(logits.float(), torch.softmax(targets, 1)))
                score = float((logits.argmax(1) == labels).float().mean())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            losses.append(loss.item())
            scores.append(score)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", metric=f"{np.mean(scores[-20:]):.3f}", lr=f"{lr:.2e}")
        kept = averaged.module if averaged is not None else model  # the weights that are validated and saved
        validated = (epoch + 1) % args.validate_every == 0 or epoch + 1 == args.epochs
        result = validate(args.kind, kept, val_set, device, bf16) if validated else {}
        entry = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "train_metric": float(np.mean(scores)),
            "lr": lr,
            "seconds": round(time.time() - tick, 1),
            **result,
        }
        history.append(entry)
        improved = validated and entry[monitor] > best
        if improved:
            best, stale = entry[monitor], 0
        elif validated:
            stale += args.validate_every
        if main:
            print(json.dumps(entry), flush=True)
            if improved:
                save_weights(kept, out / f"{args.kind}.safetensors", args.kind, settings)
            save_weights(kept, out / f"{args.kind}_last.safetensors", args.kind, settings)
            (out / "history.json").write_text(
                json.dumps(
                    {
                        "kind": args.kind,
                        "monitor": monitor,
                        "metric": "tversky (pooled, val tumour slices)" if segmenter else "accuracy (val slices)",
                        "best": best,
                        "args": vars(args),
                        "epochs": history,
                    },
                    indent=1,
                )
                + "\n"
            )
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    "best": best,
                    "epoch": epoch + 1,
                    **({"ema": averaged.state_dict()} if averaged else {}),
                },
                out / "last.pt.tmp",
            )
            os.replace(out / "last.pt.tmp", out / "last.pt")
        if stale >= args.patience:
            if main:
                print(f"early stop: no better {monitor} for {args.patience} epochs", flush=True)
            break
        if args.max_minutes and (time.time() - began) / 60 > args.max_minutes:
            if main:
                print(f"stop: wall-clock budget of {args.max_minutes} minutes spent", flush=True)
            break
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return out / f"{args.kind}.safetensors"
