"""Train the fused model: ``python -m fusion.train --stage distill --config configs/base.yaml [--pretrained PATH] [key=value ...]``.

One code path for a CPU smoke run, one GPU, or many GPUs under torchrun (DistributedDataParallel).
Stages (configs/<stage>.yaml): pretrain, distill, semantic, finetune; and two that need no config and
train the stability head alone: ``--stage camvid --data DIR`` (CamVid's semantic labels,
``fusion.training.camvid_stability``; the head inherits CamVid's licence, CC BY-NC 4.0) and
``--stage stability`` (a map's tracks, ``fusion.training.map_stability``); ``key=value`` overrides
their ``default_conf``. The loss terms are looked up by
name (``fusion.training.losses.TERMS``) and read shared, lazily computed step inputs
(``fusion.training.inputs``). A run writes to outputs/<run>/: config.yaml, run.json (config hash, git
commit), pip_freeze.txt, metrics.csv and metrics.jsonl (means over each logging window, validation
metrics), checkpoints/step_XXXXXXX.pt (full state, resumable), final.pt and, with validation, best.pt
(fused checkpoints that ``fused_xfeat`` loads). Data for step s is a pure function of (seed, s), so a
resumed run continues exactly.
"""

import copy
import csv
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..features.fused import load_checkpoint, packaged_checkpoint, save_checkpoint
from ..features.xfeat import load_xfeat_backbone
from ..jobs.errors import CommandParser, run_cli
from ..store.provenance import config_hash, git_commit
from .config import load_config, with_overrides
from .data import build_dataset
from .distributed import all_reduce_mean, all_reduce_sum, barrier
from .inputs import StepInputs, inputs_of_terms, unmet_requirements, uses_sfd2_stability
from .losses import TERMS
from .losses.semantic import PrototypeBank
from .losses.weighting import LossWeighting
from .model import TrainingModel
from .teacher import load_teacher
from .validation import METRICS, build_validation, validate

logger = logging.getLogger("fusion")

HEADS = tuple(sorted({head for term in TERMS.values() for head in term.heads}))
BATCHNORM_MODES = ("auto", "frozen", "train")
PROJECT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def active_terms(conf: dict):
    weights = conf["losses"]["weights"]
    unknown = sorted(set(weights) - set(TERMS))
    if unknown:
        raise ValueError(f"losses.weights.{unknown[0]}: no such loss term (known: {', '.join(TERMS)})")
    return [name for name, weight in weights.items() if weight > 0]  # in the config's order


def check_requirements(conf: dict) -> None:
    """Fail before training when a selected term needs something (a teacher, labels) that the config lacks."""
    terms = active_terms(conf)
    if not terms:
        raise ValueError("every loss weight is 0: nothing to train")
    for reason, names in unmet_requirements(terms, conf).items():
        raise ValueError(f"stage {conf['stage']!r} uses {', '.join(names)}, which need {reason} or drop them with "
                         + " ".join(f"losses.weights.{name}=0" for name in names))
    if conf["model"]["batchnorm"] not in BATCHNORM_MODES:
        raise ValueError(f"model.batchnorm={conf['model']['batchnorm']!r} is not one of {', '.join(BATCHNORM_MODES)}")
    if conf["train"]["val_every"] > 0:
        if not conf["val"]["root"]:
            raise ValueError("train.val_every > 0 validates on held-out images: set val.root=FOLDER (HPatches or "
                             "Oxford sequences, or any image folder) or train.val_every=0")
        if conf["val"]["best"] not in METRICS:
            raise ValueError(f"val.best={conf['val']['best']!r} is not one of {', '.join(METRICS)}")


def frozen_batchnorm(conf: dict, pretrained: Optional[Path]) -> bool:
    """BatchNorm keeps its running statistics when training starts from trained weights (``model.batchnorm: auto``)."""
    mode = conf["model"]["batchnorm"]
    return mode == "frozen" or (mode == "auto" and (pretrained is not None or conf["model"]["init"] == "official"))


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 0 at ``total``; a function of the step alone (exact resume)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class StepSampler(torch.utils.data.Sampler):
    """Dataset indices of steps ``start`` .. ``end``: batch ``step`` of ``rank`` is fixed by (step, rank)."""

    def __init__(self, start: int, end: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.end, self.batch, self.rank, self.world = start, end, batch_size, rank, world

    def __iter__(self):
        for step in range(self.start, self.end):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self):
        return (self.end - self.start) * self.batch


class LossWindow:
    """Means of the losses over the steps since the last logged row (single steps are too noisy to plot)."""

    def __init__(self):
        self.sums, self.counts, self.skipped = defaultdict(float), defaultdict(int), 0

    def add(self, total: float, losses: Dict[str, float], skipped: bool) -> None:
        self.skipped += int(skipped)
        if skipped:
            return
        for key, value in {"loss/total": total, **{f"loss/{k}": v for k, v in losses.items()}}.items():
            self.sums[key] += value
            self.counts[key] += 1

    def take_row(self) -> dict:
        """The means since the last row; the window starts again empty."""
        row = {**{k: self.sums[k] / self.counts[k] for k in self.sums}, "skipped": self.skipped}
        self.sums.clear()
        self.counts.clear()
        self.skipped = 0
        return row


class Trainer:
    def __init__(self, conf: dict, pretrained: Optional[Path] = None):
        self.conf = conf
        check_requirements(conf)
        cuda = self.join_processes(conf["device"])
        train = conf["train"]
        self.amp = cuda and train["amp"]
        self.amp_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[train["amp_dtype"]]
        self.seed_everything(conf["seed"], conf["deterministic"], cuda)
        self.hash = config_hash(conf)
        self.run_dir = Path(conf["output_root"]) / (conf["run"] or f"{conf['stage']}-{self.hash}")
        self.terms = active_terms(conf)
        self.build_model(pretrained, cuda)
        self.load_teachers(inputs_of_terms(self.terms, conf))
        self.build_optimiser()
        self.dataset = build_dataset(conf["data"], conf["seed"])
        self.validation = None
        if train["val_every"] > 0 and self.rank == 0:
            synthetic = conf["data"]["synthetic"]["root"] if conf["data"]["mix"].get("synthetic", 0) > 0 else None
            self.validation = build_validation(conf["val"], synthetic)
        self.best: Optional[dict] = None  # {"step", "metrics"} of best.pt
        self.step = 0

    def join_processes(self, want: str) -> bool:
        """Rank and world size (torchrun's environment, one process without it) and this rank's device;
        whether it is a CUDA device."""
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        cuda = torch.cuda.is_available() and want in ("auto", "cuda")
        if want == "cuda" and not cuda:
            raise ValueError("device=cuda but no CUDA device is available")
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
        return cuda

    def build_model(self, pretrained: Optional[Path], cuda: bool) -> None:
        """The model to train (``self.model``), from the official, random or ``pretrained`` weights, and
        ``self.net``, the same model under DistributedDataParallel when there are several processes."""
        conf = self.conf
        frozen = frozen_batchnorm(conf, pretrained)
        model = TrainingModel(conf["model"], frozen_batchnorm=frozen)
        if conf["model"]["init"] == "random":
            for module in model.fused.backbone.modules():
                if hasattr(module, "reset_parameters") and module is not model.fused.backbone:
                    module.reset_parameters()
        if pretrained:
            model.fused.load_state_dict(load_checkpoint(pretrained).state_dict())
        if self.world > 1 and not frozen:
            if cuda:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                logger.warning("model.batchnorm=train under DDP on CPU: SyncBatchNorm needs CUDA, so each rank "
                               "normalises with its own batch statistics")
        self.model = model.to(self.device).train()
        # Which heads get a loss depends on the stage (and on the step, when decoupled).
        self.net = (torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device] if cuda else None,
                                                              find_unused_parameters=True)
                    if self.world > 1 else self.model)

    def load_teachers(self, wanted) -> None:
        """The frozen models that the selected terms learn from (None where no term needs one)."""
        conf = self.conf
        self.teacher = load_teacher(conf["teacher"]["checkpoint"]).to(self.device) if "teacher" in wanted else None
        self.stability_teacher = None
        if "stability_teacher" in wanted and not uses_sfd2_stability(conf):
            source = conf["teacher"]["stability"]
            self.stability_teacher = load_checkpoint(packaged_checkpoint() if source == "camvid" else source)
            if not bool(self.stability_teacher.stability_trained):
                raise ValueError(f"teacher.stability={source}: its stability head is untrained, so it cannot teach")
            self.stability_teacher.to(self.device)
        self.xfeat_teacher = None
        if "xfeat_teacher" in wanted:
            self.xfeat_teacher = load_xfeat_backbone().to(self.device).eval()
        for frozen_model in (self.teacher, self.xfeat_teacher, self.stability_teacher):
            if frozen_model is not None:
                frozen_model.requires_grad_(False)

    def build_optimiser(self) -> None:
        """The loss weighting, the semantic prototypes, the optimiser and the gradient scaler."""
        conf, train = self.conf, self.conf["train"]
        self.prototypes = PrototypeBank(3, 64, conf["losses"]["prototype"]["momentum"]).to(self.device)
        static = {n: float(conf["losses"]["weights"][n]) for n in self.terms}
        self.weighting = LossWeighting(self.terms, static, conf["losses"]["weighting"],
                                       conf["losses"]["gradnorm_alpha"]).to(self.device)
        groups = [{"params": list(self.model.parameters()), "base_lr": train["lr"]}]
        if conf["losses"]["weighting"] == "uncertainty":
            # Their own group: at the network's learning rate the log-variances would barely move in a run.
            lr = conf["losses"]["log_var_lr"]
            groups.append({"params": [self.weighting.log_vars], "base_lr": lr, "lr": lr, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=train["lr"], weight_decay=train["weight_decay"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    @staticmethod
    def seed_everything(seed: int, deterministic: bool, cuda: bool = False) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            # CUDA has no deterministic backward for bilinear interpolation, grid_sample or adaptive
            # pooling, which XFeat and the losses use: raising there would make deterministic runs impossible.
            torch.use_deterministic_algorithms(True, warn_only=cuda)
            if cuda:
                logger.warning("deterministic=true on CUDA: the backward passes of interpolate, grid_sample and "
                               "adaptive pooling have no deterministic CUDA kernel and stay non-deterministic "
                               "(bit-exact repeats on CPU only)")

    def autocast(self):
        """Mixed precision for the forward passes only; every loss term runs in float32 outside it."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    # ---- state -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "weighting": self.weighting.state_dict(),
                "prototypes": self.prototypes.state_dict(), "best": self.best,
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "config": self.conf, "config_hash": self.hash}

    def save_state(self) -> Path:
        folder = self.run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{self.step:07d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        return path

    def resume(self) -> bool:
        """Continue from the newest checkpoint of this run, if any."""
        checkpoints = sorted((self.run_dir / "checkpoints").glob("step_*.pt"))
        if not checkpoints:
            return False
        state = torch.load(checkpoints[-1], map_location=self.device, weights_only=False)
        if state["config_hash"] != self.hash:
            raise ValueError(f"{checkpoints[-1]}: written with another config (hash {state['config_hash']} != "
                             f"{self.hash}); use another run name")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.weighting.load_state_dict(state["weighting"])
        self.prototypes.load_state_dict(state["prototypes"])
        self.best = state["best"]
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = state["step"]
        logger.info(f"resumed {self.run_dir} at step {self.step}")
        return True

    # ---- losses ----------------------------------------------------------------------------
    def compute_losses(self, batch: dict, terms) -> Dict[str, torch.Tensor]:
        """Each term of ``terms`` on this batch, its inputs computed once and shared (float32, autocast off)."""
        step = StepInputs(self, batch, terms)
        losses = {}
        for name in terms:
            term = TERMS[name]
            with torch.autocast(self.device.type, enabled=False):
                value = term.compute(self.conf["losses"], **{n: step[n] for n in term.inputs})
            if value is not None:
                losses[name] = value
        return losses

    # ---- loop ------------------------------------------------------------------------------
    def terms_at(self, step: int):
        decoupled = self.conf["train"]["decoupled"]
        if decoupled["enabled"] and step < decoupled["detector_start"]:
            return [t for t in self.terms if not TERMS[t].detector]
        return self.terms

    def train_heads_of(self, terms) -> None:
        """Heads that no term of this step trains are frozen (e.g. the detector before a decoupled start)."""
        for head in HEADS:
            self.model.get_submodule(head).requires_grad_(any(head in TERMS[t].heads for t in terms))

    def set_learning_rate(self) -> float:
        train = self.conf["train"]
        factor = learning_rate_factor(self.step, train["warmup_steps"], train["steps"])
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return train["lr"] * factor

    def optimise(self, losses: Dict[str, torch.Tensor], total: torch.Tensor) -> bool:
        """One update from ``total``; False (and no update) when any rank's loss is not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        bad = torch.tensor(float(not losses or not bool(torch.isfinite(total))), device=self.device)
        if float(all_reduce_sum(bad)) > 0:  # every rank skips together, or DDP would wait forever
            return False
        if self.weighting.mode == "gradnorm":
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            self.weighting.gradnorm_step(losses, [p for p in self.model.parameters() if p.requires_grad],
                                         loss_scale=scale)
        self.scaler.scale(total).backward()
        if self.weighting.log_vars.grad is not None:  # outside DDP's module: average by hand
            self.weighting.log_vars.grad = all_reduce_mean(self.weighting.log_vars.grad)
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.conf["train"]["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return True

    def run_validation(self) -> dict:
        """Validation metrics of the current model (rank 0); keeps best.pt at the best ``val.best`` so far."""
        self.model.eval()
        metrics = validate(self.model.fused, self.validation, self.device, self.conf["val"]["max_keypoints"])
        self.model.train()
        key = self.conf["val"]["best"]
        if self.best is None or metrics[key] > self.best["metrics"][key]:
            self.best = {"step": self.step, "metrics": metrics}
            save_checkpoint(self.model.fused, self.run_dir / "best.pt", {"training": {
                "stage": self.conf["stage"], "steps": self.step, "config_hash": self.hash, "validation": metrics}})
        logger.info(f"step {self.step} validation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return {f"val/{k}": v for k, v in metrics.items()}

    def write_run_files(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.conf, sort_keys=False))
        (self.run_dir / "run.json").write_text(json.dumps(
            {"config_hash": self.hash, "git_commit": git_commit(), "stage": self.conf["stage"],
             "world_size": self.world, "device": str(self.device), "torch": torch.__version__}, indent=1))
        freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True)
        (self.run_dir / "pip_freeze.txt").write_text(freeze.stdout)

    def log(self, row: dict, writer_state: dict):
        with open(self.run_dir / "metrics.jsonl", "a") as fd:
            fd.write(json.dumps(row) + "\n")
        path = self.run_dir / "metrics.csv"
        validation = [f"val/{k}" for k in (*METRICS, "matches")] if self.conf["train"]["val_every"] > 0 else []
        columns = ["step", "stage", "time", "lr", "loss/total", *[f"loss/{t}" for t in self.terms],
                   *self.weighting.state().keys(), *validation, "skipped"]
        new = not path.exists()
        with open(path, "a", newline="") as fd:
            writer = csv.DictWriter(fd, columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if writer_state.get("tensorboard") is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    writer_state["tensorboard"].add_scalar(key, value, row["step"])

    def open_tensorboard(self):
        """A TensorBoard writer in the run folder when ``train.tensorboard`` asks for one and it is installed."""
        if not (self.conf["train"]["tensorboard"] and self.rank == 0):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("train.tensorboard: tensorboard is not installed; logging CSV and JSONL only")
            return None
        return SummaryWriter(self.run_dir / "tensorboard")

    def train_step(self, batch: dict, window: LossWindow) -> Tuple[float, torch.Tensor]:
        """One step on ``batch`` (skipped when a loss is not finite), added to ``window``; its learning rate and
        total loss."""
        terms = self.terms_at(self.step)
        self.train_heads_of(terms)
        lr = self.set_learning_rate()
        losses = self.compute_losses(batch, terms)
        total = self.weighting(losses) if losses else torch.tensor(float("nan"))
        updated = self.optimise(losses, total)
        if not updated:
            logger.warning(f"step {self.step + 1}: non-finite loss {total.item()}; step skipped")
        elif any("fused.stability_head" in TERMS[t].heads for t in terms):
            self.model.fused.stability_trained.fill_(True)
        window.add(total.item(), {k: v.item() for k, v in losses.items()}, skipped=not updated)
        self.step += 1
        return lr, total

    def step_row(self, window: LossWindow, end: int) -> dict:
        """What the step just taken logs: the window's mean losses every ``log_every`` steps (then ``window`` is
        emptied), the validation metrics every ``val_every`` steps; empty when neither is due."""
        conf = self.conf["train"]
        row = {}
        if self.step % conf["log_every"] == 0 or self.step == end:
            row.update(window.take_row(), **self.weighting.state())
        if conf["val_every"] > 0 and (self.step % conf["val_every"] == 0 or self.step == conf["steps"]):
            if self.validation is not None:
                row.update(self.run_validation())
            barrier()
        return row

    def train(self, stop_at: Optional[int] = None) -> Optional[Path]:
        """Train to ``train.steps`` (or stop after ``stop_at``, keeping a resumable checkpoint)."""
        conf = self.conf["train"]
        main_process = self.rank == 0
        resumed = self.resume()
        if main_process:
            self.write_run_files()
        writer_state = {"tensorboard": self.open_tensorboard()}
        end = conf["steps"] if stop_at is None else min(conf["steps"], stop_at)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.conf["data"]["batch_size"], num_workers=self.conf["data"]["num_workers"],
            sampler=StepSampler(self.step, end, self.conf["data"]["batch_size"], self.rank, self.world))
        start = time.time()
        if self.validation is not None and not resumed:  # the starting point: best.pt is never worse than it
            self.log({"step": 0, "stage": self.conf["stage"], "time": 0.0, **self.run_validation()}, writer_state)
        barrier()
        window = LossWindow()
        progress = tqdm(total=end - self.step, desc=f"train {self.conf['stage']}", disable=not main_process)
        try:
            for batch in loader:
                lr, total = self.train_step(batch, window)
                progress.update(1)
                progress.set_postfix(loss=f"{total.item():.3f}")
                row = self.step_row(window, end)
                if main_process and row:
                    self.log({"step": self.step, "stage": self.conf["stage"], "time": round(time.time() - start, 2),
                              "lr": lr, **row}, writer_state)
                if main_process and (self.step % conf["checkpoint_every"] == 0 or self.step == end):
                    self.save_state()
        except KeyboardInterrupt:
            if main_process:
                logger.warning(f"interrupted: checkpoint at step {self.step} in {self.save_state()}")
            raise
        finally:
            progress.close()
        if self.step < conf["steps"] or not main_process:
            return None
        return save_checkpoint(self.model.fused, self.run_dir / "final.pt",
                               {"training": {"stage": self.conf["stage"], "steps": self.step,
                                             "config_hash": self.hash, "best": self.best}})


def resolve_config(config: Path, stage: Optional[str], overrides) -> dict:
    """``config`` with the stage file's settings applied, then the overrides.

    The stage file is ``<stage>.yaml`` beside ``config``, else the project's configs/<stage>.yaml.
    """
    config = Path(config)
    if stage is None:
        return load_config(config, overrides)
    candidates = [config.parent / f"{stage}.yaml", PROJECT_CONFIGS / f"{stage}.yaml"]
    stage_file = next((c for c in candidates if c.is_file()), None)
    if stage_file is None:
        raise FileNotFoundError(f"{candidates[0]}: no config for stage {stage!r}")
    if stage_file.resolve() == config.resolve():
        return load_config(config, overrides)
    return load_config(stage_file, overrides, root=config)


def main(argv=None):
    parser = CommandParser("python -m fusion.train", __doc__)
    parser.add_argument("--stage", choices=("pretrain", "distill", "semantic", "finetune", "stability", "camvid"))
    parser.add_argument("--config", type=Path, default=Path("configs/base.yaml"))
    parser.add_argument("--pretrained", type=Path, help="fused checkpoint to start from (e.g. the previous stage's final.pt)")
    heads = parser.add_argument_group("--stage camvid / stability: the stability head alone, on the frozen backbone")
    heads.add_argument("--data", type=Path, help="camvid: CamVid's folder (train/, trainannot/, val/, valannot/); "
                       "the head inherits CamVid's licence, CC BY-NC 4.0")
    heads.add_argument("--reference", type=Path, help="stability: the map (COLMAP model) whose track lengths are the labels")
    heads.add_argument("--features", type=Path, help="stability: the features (.h5) the map was built from")
    heads.add_argument("--images", type=Path, help="stability: the map's images")
    heads.add_argument("--output", type=Path, help="the checkpoint to write")
    parser.add_argument("overrides", nargs="*", help="key.sub=value")
    args = parser.parse_args(argv)
    if args.stage in ("stability", "camvid"):
        needed = ("reference", "features", "images") if args.stage == "stability" else ("data",)
        missing = [f"--{name}" for name in needed if getattr(args, name) is None]
        if missing:
            parser.error(f"--stage {args.stage} needs {' '.join(missing)}")
        if args.stage == "camvid":
            from .camvid_stability import default_conf
            from .camvid_stability import main as learn_head
            inputs = (args.data,)
        else:
            from .map_stability import default_conf  # pycolmap: only this stage needs it
            from .map_stability import main as learn_head
            inputs = (args.reference, args.features, args.images)
        try:
            conf = with_overrides(default_conf, args.overrides)
        except ValueError as error:
            parser.error(f"--stage {args.stage}: {error}")
        path = learn_head(*inputs, args.output, args.pretrained, conf)
        print(f"fused checkpoint with a trained stability head: {path}")
        return
    conf = resolve_config(args.config, args.stage, args.overrides)
    trainer = Trainer(copy.deepcopy(conf), args.pretrained)
    final = trainer.train()
    if final:
        print(f"final fused checkpoint: {final}")


if __name__ == "__main__":
    run_cli(main)
