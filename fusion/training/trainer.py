"""Train the fused model: ``python -m fusion.train --stage distill --config configs/base.yaml [--pretrained PATH] [key=value ...]``.

One code path for a CPU smoke run, one GPU, or many GPUs under torchrun (DistributedDataParallel).
Stages (configs/<stage>.yaml): pretrain, distill, semantic, finetune. A run writes to
outputs/<run>/: config.yaml, run.json (config hash, git commit), pip_freeze.txt, metrics.csv and
metrics.jsonl, checkpoints/step_XXXXXXX.pt (full state, resumable) and final.pt (a fused
checkpoint that ``fused_xfeat`` loads). Data for step s is a pure function of (seed, s), so a
resumed run continues exactly.
"""

import argparse
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
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ..features.errors import run_cli
from ..features.fused import load_checkpoint, save_checkpoint
from ..features.provenance import config_hash, git_commit
from ..features.xfeat import load_xfeat_backbone
from .config import load_config
from .data import build_dataset
from .losses.descriptor import dual_softmax_nll, match_confidence
from .losses.distill import descriptor_distillation, structural_distillation
from .losses.fine import fine_offset_nll
from .losses.geometric import sample_at, warp_consistency
from .losses.infonce import infonce_hard_negatives
from .losses.keypoint import keypoint_loss, teacher_cell_targets
from .losses.reliability import reliability_loss
from .losses.semantic import (
    PrototypeBank,
    pseudo_labels,
    stability_cross_entropy,
    stability_weights_of,
)
from .losses.weighting import LossWeighting
from .model import TrainingModel
from .teacher import load_teacher

logger = logging.getLogger("fusion")

LOSS_NAMES = ("descriptor", "reliability", "keypoint", "fine", "infonce", "structural", "descriptor_distill",
              "stability", "prototype", "stability_detection", "geometric")
TEACHER_TERMS = ("structural", "descriptor_distill")
LABEL_TERMS = ("stability", "prototype", "stability_detection")
DETECTOR_TERMS = ("keypoint", "reliability", "stability_detection")
PROJECT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def active_terms(conf: dict):
    return [n for n in LOSS_NAMES if conf["losses"]["weights"].get(n, 0) > 0]


def check_requirements(conf: dict) -> None:
    """Fail before training when a selected term needs a teacher or labels that the config lacks."""
    terms = active_terms(conf)
    if not terms:
        raise ValueError("every loss weight is 0: nothing to train")
    has_teacher = bool(conf["teacher"]["checkpoint"])
    needs_teacher = [t for t in terms if t in TEACHER_TERMS]
    if conf["losses"]["keypoint_teacher"] == "sfd2" and ("keypoint" in terms or "stability_detection" in terms):
        needs_teacher.append("keypoint (keypoint_teacher: sfd2)")
    has_labels = conf["data"]["mix"].get("synthetic", 0) > 0 and conf["data"]["synthetic"].get("labels")
    if not has_labels and not has_teacher:
        needs_teacher += [t for t in terms if t in LABEL_TERMS]
    if needs_teacher and not has_teacher:
        raise ValueError(
            f"stage {conf['stage']!r} uses {', '.join(needs_teacher)}, which need an SFD2 teacher: set "
            "teacher.checkpoint=PATH (see third_party/README.md) or drop them with "
            + " ".join(f"losses.weights.{t.split()[0]}=0" for t in needs_teacher))


def cosine_schedule(warmup: int, total: int):
    def factor(step):
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


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


def cells_of(points: torch.Tensor, width: int) -> torch.Tensor:
    return (points[:, 1] // 8).long() * (width // 8) + (points[:, 0] // 8).long()


class Trainer:
    def __init__(self, conf: dict, pretrained: Optional[Path] = None):
        self.conf = conf
        check_requirements(conf)
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        want = conf["device"]
        cuda = torch.cuda.is_available() and want in ("auto", "cuda")
        if want == "cuda" and not cuda:
            raise ValueError("device=cuda but no CUDA device is available")
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
        self.amp = cuda and conf["train"]["amp"]
        self.seed_everything(conf["seed"], conf["deterministic"])
        self.hash = config_hash(conf)
        self.run_dir = Path(conf["output_root"]) / (conf["run"] or f"{conf['stage']}-{self.hash}")
        self.terms = active_terms(conf)

        model = TrainingModel(conf["model"])
        if conf["model"]["init"] == "random":
            for module in model.fused.backbone.modules():
                if hasattr(module, "reset_parameters") and module is not model.fused.backbone:
                    module.reset_parameters()
        if pretrained:
            model.fused.load_state_dict(load_checkpoint(pretrained).state_dict())
        self.model = model.to(self.device).train()
        # Which heads get a loss depends on the stage (and on the step, when decoupled).
        self.net = (torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device] if cuda else None,
                                                              find_unused_parameters=True)
                    if self.world > 1 else self.model)
        self.teacher = load_teacher(conf["teacher"]["checkpoint"]).to(self.device) if conf["teacher"]["checkpoint"] else None
        self.keypoint_teacher = None
        if conf["losses"]["keypoint_teacher"] == "xfeat":
            self.keypoint_teacher = load_xfeat_backbone().to(self.device).eval()
        for frozen in (self.teacher, self.keypoint_teacher):
            if frozen is not None:
                frozen.requires_grad_(False)
        self.prototypes = PrototypeBank(3, 64, conf["losses"]["prototype"]["momentum"]).to(self.device)
        static = {n: float(conf["losses"]["weights"][n]) for n in self.terms}
        self.weighting = LossWeighting(self.terms, static, conf["losses"]["weighting"],
                                       conf["losses"]["gradnorm_alpha"]).to(self.device)
        parameters = [p for p in self.model.parameters()]
        if conf["losses"]["weighting"] == "uncertainty":
            parameters.append(self.weighting.log_vars)
        train = conf["train"]
        self.optimizer = torch.optim.AdamW(parameters, lr=train["lr"], weight_decay=train["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_schedule(train["warmup_steps"], train["steps"]))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.dataset = build_dataset(conf["data"], conf["seed"])
        self.step = 0

    @staticmethod
    def seed_everything(seed: int, deterministic: bool) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False

    # ---- state -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "weighting": self.weighting.state_dict(), "prototypes": self.prototypes.state_dict(),
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
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.weighting.load_state_dict(state["weighting"])
        self.prototypes.load_state_dict(state["prototypes"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = state["step"]
        logger.info(f"resumed {self.run_dir} at step {self.step}")
        return True

    # ---- losses ----------------------------------------------------------------------------
    def labels_for(self, batch, teacher_maps):
        """Stability labels (2B, h, w) and per-cell weights: ADE20K maps where given, else teacher pseudo labels."""
        labels = torch.cat([batch["labels0"], batch["labels1"]]).to(self.device)
        weights = (labels >= 0).float()
        if teacher_maps is not None and "stability_logits" in teacher_maps:
            logits = F.interpolate(teacher_maps["stability_logits"], labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            pseudo, pseudo_weights = pseudo_labels(logits, **self.conf["data"]["pseudo_labels"])
            missing = labels < 0
            labels = torch.where(missing, pseudo, labels)
            weights = torch.where(missing, pseudo_weights, weights)
        return labels, weights

    def correspondences(self, batch: dict, generator: torch.Generator):
        """Per image pair: sampled valid cells of image 0 and their true positions in image 1."""
        picks = []
        for i in range(batch["image0"].shape[0]):
            valid = batch["valid01"][i].flatten().nonzero()[:, 0]
            if len(valid) < 8:
                continue
            pick = valid[torch.randperm(len(valid), generator=generator)[: self.conf["train"]["points_per_image"]]]
            picks.append((i, pick.to(self.device), batch["warp01"][i].reshape(-1, 2)[pick].to(self.device)))
        return picks

    def fine_query(self, batch: dict, picks, size):
        """XFeat* refinement targets: for each sampled cell, the offset (in image 0, from its cell corner)
        of the point that matches the corner of the image-1 cell it lands in."""
        b, width = batch["image0"].shape[0], size[1]
        rows0, cells0, rows1, cells1, offsets = [], [], [], [], []
        for i, pick, p1 in picks:
            corner1 = (p1 // 8) * 8
            target0 = sample_at(batch["warp10"][i].permute(2, 0, 1)[None].to(self.device),
                                (corner1 + 3.5)[None, None], size)[0, :, 0].t() - 3.5
            corner0 = torch.stack([(pick % (width // 8)) * 8, (pick // (width // 8)) * 8], 1).float()
            offset = target0 - corner0
            keep = (offset.abs() < 8).all(1)
            rows0.append(torch.full((int(keep.sum()),), i, device=self.device))
            rows1.append(torch.full((int(keep.sum()),), b + i, device=self.device))
            cells0.append(pick[keep])
            cells1.append(cells_of(corner1[keep], width))
            offsets.append(offset[keep])
        if not picks or sum(len(o) for o in offsets) < 2:
            return None, None
        return tuple(torch.cat(x) for x in (rows0, cells0, rows1, cells1)), torch.cat(offsets)

    def compute_losses(self, batch: dict, terms) -> Dict[str, torch.Tensor]:
        conf = self.conf["losses"]
        images = torch.cat([batch["image0"], batch["image1"]]).to(self.device)
        size = images.shape[-2:]
        b = batch["image0"].shape[0]
        generator = torch.Generator().manual_seed(self.conf["seed"] * 1_000_003 + self.step * 7919 + self.rank)
        picks = self.correspondences(batch, generator)
        fine_query, fine_offsets = self.fine_query(batch, picks, size) if "fine" in terms else (None, None)
        teacher_maps = None
        if self.teacher is not None and any(t in terms for t in (*TEACHER_TERMS, *LABEL_TERMS, "keypoint")):
            with torch.no_grad():
                teacher_maps = self.teacher(images)
        teacher_descriptors = teacher_maps["descriptors"] if "descriptor_distill" in terms else None
        maps = self.net(images, teacher_descriptors, fine_query)
        desc = F.normalize(maps["dense_descriptors"], dim=1)
        losses: Dict[str, list] = {t: [] for t in terms}

        for i, pick, p1 in picks:
            d0 = desc[i].flatten(1)[:, pick].t()
            d1 = F.normalize(sample_at(desc[b + i: b + i + 1], p1[None, None], size)[0, :, 0].t(), dim=1)
            if "descriptor" in terms:
                losses["descriptor"].append(dual_softmax_nll(d0, d1, conf["descriptor_temperature"]))
            if "reliability" in terms:
                predicted = maps["reliability"][i, 0].flatten()[pick]
                losses["reliability"].append(reliability_loss(predicted, match_confidence(d0, d1, conf["descriptor_temperature"])))
            if "infonce" in terms:
                losses["infonce"].append(infonce_hard_negatives(d0, d1, **conf["infonce"]))
        if fine_query is not None:
            losses["fine"].append(fine_offset_nll(maps["fine_logits"], fine_offsets))

        targets, stability_labels, stability_weights = None, None, None
        if any(t in terms for t in ("keypoint", "stability_detection")):
            with torch.no_grad():
                if conf["keypoint_teacher"] == "sfd2":
                    targets = teacher_cell_targets(teacher_maps["score_logits"])
                else:
                    targets = teacher_cell_targets(self.keypoint_teacher.forward_maps(images)["keypoint_logits"])
        if any(t in terms for t in LABEL_TERMS):
            stability_labels, stability_weights = self.labels_for(batch, teacher_maps)
        if "keypoint" in terms:
            losses["keypoint"].append(keypoint_loss(maps["keypoint_logits"], targets))
        if "stability_detection" in terms:
            losses["stability_detection"].append(
                keypoint_loss(maps["keypoint_logits"], targets, stability_weights_of(stability_labels)))
        if "stability" in terms:
            losses["stability"].append(stability_cross_entropy(maps["stability_logits"], stability_labels,
                                                               stability_weights))
        if "prototype" in terms:
            flat_desc = desc.permute(0, 2, 3, 1).reshape(-1, desc.shape[1])
            flat_labels = stability_labels.flatten()
            self.prototypes.update(flat_desc.detach(), flat_labels)
            losses["prototype"].append(self.prototypes.margin_loss(flat_desc, flat_labels,
                                                                   conf["prototype"]["margin"]))
        if "structural" in terms:
            student = [maps["map_1_4"], maps["map_1_8"], maps["map_1_16"]]
            teacher = [teacher_maps["map_1_2"], teacher_maps["map_1_4"], teacher_maps["trunk"]]
            losses["structural"].append(structural_distillation(student, teacher, conf["structural"]["grid"],
                                                                conf["structural"]["kind"],
                                                                conf["structural"]["layer_weighting"]))
        if "descriptor_distill" in terms:
            losses["descriptor_distill"].append(
                descriptor_distillation(desc, F.normalize(maps["adapted_teacher"], dim=1)))
        if "geometric" in terms:
            detection = torch.cat([maps["reliability"], 1 - maps["keypoint_logits"].softmax(1)[:, 64:]], 1)
            dev = {k: batch[k].to(self.device) for k in ("warp01", "valid01", "warp10", "valid10")}
            losses["geometric"].append(warp_consistency(detection[:b], detection[b:], dev["warp01"],
                                                        dev["valid01"].float(), dev["warp10"],
                                                        dev["valid10"].float(), size))
        return {name: torch.stack(values).mean() for name, values in losses.items() if values}

    # ---- loop ------------------------------------------------------------------------------
    def terms_at(self, step: int):
        decoupled = self.conf["train"]["decoupled"]
        if decoupled["enabled"] and step < decoupled["detector_start"]:
            return [t for t in self.terms if t not in DETECTOR_TERMS]
        return self.terms

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
        columns = ["step", "stage", "time", "lr", "loss/total", *[f"loss/{t}" for t in self.terms],
                   *self.weighting.state().keys(), "skipped"]
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

    def train(self, stop_at: Optional[int] = None) -> Optional[Path]:
        """Train to ``train.steps`` (or stop after ``stop_at``, keeping a resumable checkpoint)."""
        conf = self.conf["train"]
        main_process = self.rank == 0
        self.resume()
        if main_process:
            self.write_run_files()
        writer_state = {"tensorboard": None}
        if conf["tensorboard"] and main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer_state["tensorboard"] = SummaryWriter(self.run_dir / "tensorboard")
            except ImportError:
                logger.warning("train.tensorboard: tensorboard is not installed; logging CSV and JSONL only")
        end = conf["steps"] if stop_at is None else min(conf["steps"], stop_at)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.conf["data"]["batch_size"], num_workers=self.conf["data"]["num_workers"],
            sampler=StepSampler(self.step, end, self.conf["data"]["batch_size"], self.rank, self.world))
        shared = self.model.fused.backbone.block_fusion[-1].weight
        start = time.time()
        progress = tqdm(total=end - self.step, desc=f"train {self.conf['stage']}", disable=not main_process)
        try:
            for batch in loader:
                terms = self.terms_at(self.step)
                self.model.fused.backbone.keypoint_head.requires_grad_(any(t in terms for t in ("keypoint", "stability_detection")))
                self.model.fused.backbone.heatmap_head.requires_grad_("reliability" in terms)
                with torch.autocast(self.device.type, enabled=self.amp):
                    losses = self.compute_losses(batch, terms)
                    total = self.weighting(losses)
                row = {"step": self.step + 1, "stage": self.conf["stage"], "time": round(time.time() - start, 2),
                       "lr": self.scheduler.get_last_lr()[0], "loss/total": total.item(),
                       **{f"loss/{k}": v.item() for k, v in losses.items()}, "skipped": 0}
                self.optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(total):
                    row["skipped"] = 1
                    logger.warning(f"step {self.step + 1}: non-finite loss {float(total)}; step skipped")
                else:
                    if self.weighting.mode == "gradnorm":
                        self.weighting.gradnorm_step(losses, shared)
                    self.scaler.scale(total).backward()
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), conf["grad_clip"])
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                self.scheduler.step()
                self.step += 1
                row.update(self.weighting.state())
                progress.update(1)
                progress.set_postfix(loss=f"{row['loss/total']:.3f}")
                if main_process and (self.step % conf["log_every"] == 0 or self.step == end):
                    self.log(row, writer_state)
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
        if "stability" in self.terms:
            self.model.fused.stability_trained.fill_(True)
        return save_checkpoint(self.model.fused.cpu(), self.run_dir / "final.pt",
                               {"training": {"stage": self.conf["stage"], "steps": self.step,
                                             "config_hash": self.hash}})


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("pretrain", "distill", "semantic", "finetune"))
    parser.add_argument("--config", type=Path, default=Path("configs/base.yaml"))
    parser.add_argument("--pretrained", type=Path, help="fused checkpoint to start from (e.g. the previous stage's final.pt)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value")
    args = parser.parse_args(argv)
    conf = resolve_config(args.config, args.stage, args.overrides)
    trainer = Trainer(copy.deepcopy(conf), args.pretrained)
    final = trainer.train()
    if final:
        print(f"final fused checkpoint: {final}")


if __name__ == "__main__":
    run_cli(main)
