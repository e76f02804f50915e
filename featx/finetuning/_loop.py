"""The fine-tuning loop: a small trainer over a `TrainState`, fastai's `fine_tune` schedule.

A head-only warm-up (body frozen, BatchNorm layers in eval mode so their statistics stay the pretrained ones),
then all layers with discriminative learning rates (early stages lower), one-cycle or cosine, AdamW. A
stratified validation part picks the best epoch and stops the run on a plateau. After every epoch the state is
written atomically as the checkpoint; each epoch's randomness (order, augmentation, dropout) comes from a seed
of its own, so a resumed run repeats exactly what the uninterrupted run would have done (bitwise on a CPU).

A plain loop rather than skorch: skorch's NeuralNet would need callbacks for the two-phase freeze/unfreeze
schedule, per-group learning rates set per step, per-epoch seeding and a checkpoint holding the best
weights, and its defaults (an internal 20% split, NLLLoss) would be overridden one by one; the loop below
is shorter than that configuration and keeps resume exact.
"""
from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from featx.backbones._device import autocast
from featx.backbones._weights import one_line
from featx.errors import FeatxError
from featx.finetuning._config import FinetuneConfig
from featx.finetuning._data import TrainingImages, augment
from featx.finetuning._model import Loss, Trainee
from featx.outputs import atomic_path


@dataclass
class TrainState:
    """Where a run stands after `epoch` finished epochs, written as the checkpoint after each of them (the same
    keys featx wrote as a plain dict before, so older checkpoints resume). No random generator state: each
    epoch's generators are seeded from the configuration's seed and the epoch number."""

    fingerprint: dict  # the data, model, weights and configuration: a checkpoint resumes only the same run
    epoch: int = 0
    model: dict | None = None  # the model's state after `epoch`
    optimizer: dict | None = None
    optimizer_frozen: bool | None = None  # the phase (head only or not) the optimizer state belongs to
    best: dict | None = None  # the model's state at the best epoch so far
    best_epoch: int = -1
    best_key: list | None = None  # what "best" compares: [validation accuracy, -loss], or [epoch] without one
    history: list[dict] = field(default_factory=list)
    stop_after: int | None = None  # set when the run stopped early on a plateau

    def save(self, path: Path) -> None:
        state = {k: v for k, v in asdict(self).items() if k != "stop_after" or v is not None}
        buffer = io.BytesIO()
        torch.save(state, buffer)  # in memory, then written by Python: a full disk is an OSError (one line), not
        with atomic_path(path) as tmp:  # the RuntimeError torch's own writer raises ("unexpected pos")
            tmp.write_bytes(buffer.getbuffer())

    @classmethod
    def load(cls, path: Path) -> TrainState:
        """A checkpoint written by `finetune`, read without unpickling code (torch's weights_only loader)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged zip, a pickle holding other than tensors and plain values
            raise FeatxError(f"{path} is not a readable checkpoint ({one_line(exc)}): delete it, or run without "
                             "--resume to start again") from None
        if not isinstance(state, dict) or "fingerprint" not in state or set(state) - {f.name for f in fields(cls)}:
            raise FeatxError(f"{path} is not a featx finetune checkpoint: delete it, or run without --resume")
        return cls(**state)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def lr_factor(schedule: str, progress: float) -> float:
    """Learning-rate multiplier at `progress` in [0, 1] of a phase: one-cycle (warm up over the first 25%
    from 1/25 of the peak, then cosine down to 1/10^4 of it, as fastai's fit_one_cycle) or plain cosine."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    pct, start, end = 0.25, 1 / 25, 1e-4
    if progress < pct:
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * progress / pct))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * (progress - pct) / (1 - pct)))


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63)


class Trainer:
    """Trains `trainee` on `data` as `config` says, epoch after epoch from a `TrainState`, writing it to
    `checkpoint` after each; `log` gets one line per epoch."""

    def __init__(self, trainee: Trainee, data: TrainingImages, config: FinetuneConfig, checkpoint: Path,
                 log: Callable[[str], None], progress: bool) -> None:
        self.trainee, self.data, self.config, self.checkpoint = trainee, data, config, checkpoint
        self.log, self.progress = log, progress
        self.loss = Loss.of(config, data.labels[data.train], data.classes).to(trainee.device)
        self.total = config.freeze_epochs + config.epochs
        self.steps_per_epoch = math.ceil(len(self.order(0)) / config.batch_size)

    def start(self, fingerprint: dict, resume: bool) -> TrainState:
        """A new state, or the checkpoint's when `resume` finds one of this run (its model loaded)."""
        if resume and self.checkpoint.is_file():
            state = TrainState.load(self.checkpoint)
            if state.fingerprint != fingerprint:
                raise FeatxError(f"{self.checkpoint} is a checkpoint of another run (data, model or settings differ); "
                                 "run without --resume to start again")
            self.trainee.model.load_state_dict(state.model)
            self.log(f"resuming after epoch {state.epoch} of {self.total} ({self.checkpoint})")
            return state
        if resume:
            self.log(f"no checkpoint at {self.checkpoint}: starting from the first epoch")
        elif self.checkpoint.is_file():
            self.log(self._replacing(fingerprint))
        return TrainState(fingerprint)

    def _replacing(self, fingerprint: dict) -> str:
        """The line said when a run without resume finds a checkpoint, which its first epoch replaces."""
        try:
            state = TrainState.load(self.checkpoint)
        except FeatxError:
            state = None
        if state is None or state.fingerprint != fingerprint:
            return f"{self.checkpoint} is no checkpoint of this run: this run replaces it"
        return (f"{self.checkpoint} holds this run's checkpoint after epoch {state.epoch} of {self.total}, which --resume "
                "would continue: this run starts over and replaces it")

    def order(self, epoch: int, generator: torch.Generator | None = None) -> np.ndarray:
        """The training part shuffled for `epoch`; a last batch of one image is left out (BatchNorm cannot train on it)."""
        generator = generator or torch.Generator().manual_seed(_epoch_seed(self.config.seed, epoch))
        order = self.data.train[torch.randperm(len(self.data.train), generator=generator).numpy()]
        return order[:-1] if len(order) % self.config.batch_size == 1 else order

    def train(self, state: TrainState) -> TrainState:
        """The epochs left after `state`: the state at the end (its best model, history and best epoch)."""
        config, trainee = self.config, self.trainee
        optimizer, optimizer_frozen = None, None
        started, first = time.perf_counter(), state.epoch
        for epoch in range(state.epoch, state.stop_after or self.total):
            frozen = epoch < config.freeze_epochs
            if optimizer is None or optimizer_frozen != frozen:
                optimizer, optimizer_frozen = trainee.optimizer(frozen, config), frozen
                if state.optimizer is not None and state.optimizer_frozen == frozen:
                    optimizer.load_state_dict(state.optimizer)
            trainee.phase(frozen)
            phase_start = 0 if frozen else config.freeze_epochs
            phase_steps = self.steps_per_epoch * (config.freeze_epochs if frozen else config.epochs)
            epoch_start = time.perf_counter()
            loss, rate = self.run_epoch(optimizer, epoch, ((epoch - phase_start) * self.steps_per_epoch, phase_steps))
            row = {"epoch": epoch + 1, "phase": "head" if frozen else "all", "train_loss": loss, "images_per_s": rate}
            if len(self.data.val):
                row["val_loss"], row["val_accuracy"] = self.validate()
                key = [row["val_accuracy"], -row["val_loss"]]
            else:
                key = [epoch]
            row["seconds"] = time.perf_counter() - epoch_start
            done = epoch + 1
            losses = f"loss {loss:.4g}" + (f", validation loss {row['val_loss']:.4g}" if "val_loss" in row else "")
            diverged = not all(map(math.isfinite, (loss, row.get("val_loss", 0.0))))  # argmax of NaN still "scores"
            if diverged and state.best is None:
                raise FeatxError(f"training diverged in epoch {done} ({losses}): nothing to keep; lower --lr and "
                                 "--body-lr")
            state.history.append(row)
            if not diverged and (state.best_key is None or key > state.best_key):
                state.best, state.best_epoch, state.best_key = trainee.state(), done, key
            stale = done - max(state.best_epoch, config.freeze_epochs)  # all-layer epochs since the best
            stop = diverged or (len(self.data.val) and not frozen and stale >= config.patience and done < self.total)
            left = (time.perf_counter() - started) / (done - first) * (self.total - done)
            self.log(f"epoch {done}/{self.total} ({row['phase']}): loss {loss:.4f}"
                     + (f", val loss {row['val_loss']:.4f}, val accuracy {row['val_accuracy']:.4f}" if len(self.data.val) else "")
                     + f", {rate:.1f} images/s, {row['seconds']:.0f} s"
                     + (f", about {_duration(left)} left" if done < self.total and not stop else ""))
            state.epoch, state.model, state.optimizer, state.optimizer_frozen = done, trainee.state(), optimizer.state_dict(), frozen
            if stop:
                state.stop_after = done
            state.save(self.checkpoint)
            if stop:
                why = (f"training diverged ({losses}; lower --lr and --body-lr)" if diverged
                       else f"no better validation accuracy for {stale} epochs")
                self.log(f"{why}: stopping; keeping epoch {state.best_epoch}")
                break
        return state

    def run_epoch(self, optimizer: torch.optim.Optimizer, epoch: int, steps: tuple[int, int]) -> tuple[float, float]:
        """One pass over the training part; returns (mean loss, images per second)."""
        config, trainee = self.config, self.trainee
        generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
        torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout, drop path
        order = self.order(epoch, generator)
        step, total = steps
        scaler = torch.amp.GradScaler(enabled=trainee.device.type == "cuda" and not torch.cuda.is_bf16_supported())
        losses, seen, start = [], 0, time.perf_counter()
        from featx.outputs import progress_bar

        with progress_bar(len(order), self.progress, f"epoch {epoch + 1}", leave=False) as bar:
            for chunk, images in self.data.batches(order, config.batch_size):
                for group in optimizer.param_groups:
                    group["lr"] = group["peak"] * lr_factor(config.schedule, step / max(total, 1))
                x = augment(trainee.inputs(images), config.augment, config.jitter, generator)
                y = torch.from_numpy(self.data.labels[chunk]).to(trainee.device)
                with autocast(trainee.device):
                    loss = self.loss(trainee.model(x).float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(loss.detach().item() * len(chunk))
                seen += len(chunk)
                step += 1
                bar.update(len(chunk))
                bar.set_postfix(loss=f"{sum(losses) / seen:.3f}")
        return sum(losses) / max(seen, 1), seen / (time.perf_counter() - start)

    def validate(self) -> tuple[float, float]:
        """(loss, accuracy) on the validation part, without augmentation."""
        trainee, val = self.trainee, self.data.val
        trainee.model.eval()
        losses, correct = 0.0, 0
        for chunk, images in self.data.batches(val, self.config.batch_size * 2):
            probabilities = trainee.scores(images)
            y = torch.from_numpy(self.data.labels[chunk]).to(trainee.device)
            losses += float(F.nll_loss(probabilities.clamp_min(1e-12).log(), y, weight=self.loss.weight, reduction="sum"))
            correct += int((probabilities.argmax(1) == y).sum())
        return losses / len(val), correct / len(val)
