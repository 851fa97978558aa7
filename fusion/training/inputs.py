"""What the loss terms read, by name: each input is computed once per step, on first use, and shared.

An input is registered with the inputs it needs (a tuple, or a function of the config where that
depends on it) and, for something outside the data, ``missing(conf)``: why the config cannot provide
it. The trainer derives from this which terms a config cannot train (``unmet_requirements``) and
which models to load. The student's forward runs once per step and also computes the adapter and
the XFeat* refinement MLP when a term wants them, so that DistributedDataParallel sees every used
parameter in that one forward.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

import torch
import torch.nn.functional as F

from .losses import TERMS
from .losses.fine import representable
from .losses.keypoint import teacher_cell_targets
from .losses.semantic import pseudo_labels

TEACHER = "an SFD2 teacher: set teacher.checkpoint=PATH (see third_party/README.md)"


@dataclass(frozen=True)
class StepInput:
    name: str
    compute: Callable[["StepInputs"], Any]
    needs: Callable[[dict], Tuple[str, ...]]
    missing: Callable[[dict], Optional[str]]


INPUTS: Dict[str, StepInput] = {}


def provides(name: str, needs=(), missing: Callable[[dict], Optional[str]] = None):
    needs_of = needs if callable(needs) else (lambda conf, fixed=tuple(needs): fixed)

    def register(compute):
        INPUTS[name] = StepInput(name, compute, needs_of, missing or (lambda conf: None))
        return compute

    return register


def closure(names: Iterable[str], conf: dict) -> Set[str]:
    """``names`` and every input they need, transitively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(INPUTS[name].needs(conf))
    return seen


def inputs_of_terms(terms: Iterable[str], conf: dict) -> Set[str]:
    return closure([name for term in terms for name in TERMS[term].inputs], conf)


def unmet_requirements(terms: Iterable[str], conf: dict) -> Dict[str, List[str]]:
    """What the config lacks -> the terms that need it."""
    unmet: Dict[str, List[str]] = {}
    for term in terms:
        for name in sorted(closure(TERMS[term].inputs, conf)):
            reason = INPUTS[name].missing(conf)
            if reason and term not in unmet.get(reason, []):
                unmet.setdefault(reason, []).append(term)
    return unmet


class StepInputs:
    """The inputs of one training step; ``step[name]`` computes an input on first use."""

    def __init__(self, trainer, batch: dict, terms: Iterable[str]):
        self.trainer, self.batch, self.conf, self.device = trainer, batch, trainer.conf, trainer.device
        self.wanted = inputs_of_terms(terms, self.conf)
        seed = self.conf["seed"] * 1_000_003 + trainer.step * 7919 + trainer.rank
        self.generator = torch.Generator().manual_seed(seed)
        self.values: Dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self.values:
            self.values[name] = INPUTS[name].compute(self)
        return self.values[name]


def floats(maps: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Maps in float32: the losses run outside autocast, whatever precision the forward used."""
    return {k: v.float() if v.is_floating_point() else v for k, v in maps.items()}


class Correspondences(NamedTuple):
    pair: int  # index of the image pair in the batch
    cells0: torch.Tensor  # (n,) sampled 1/8 cells of image 0 (flat indices)
    cells1: torch.Tensor  # (n,) the image-1 cells their centres truly land in: the true coarse matches


class Match(NamedTuple):
    pair: int
    cells0: torch.Tensor
    cells1: torch.Tensor
    raw0: torch.Tensor  # (n, D) raw descriptors of the coarse matches in image 0 ...
    raw1: torch.Tensor  # ... and in image 1
    desc0: torch.Tensor  # (n, D) the same, L2-normalised
    desc1: torch.Tensor


class FineTargets(NamedTuple):
    query: Tuple[torch.Tensor, ...]  # rows0, cells0, rows1, cells1: image and cell of each coarse match
    offsets: torch.Tensor  # (n, 2) image-0 offset from the cell corner that corresponds to the image-1 corner


@provides("images")
def images(step: StepInputs) -> torch.Tensor:
    return torch.cat([step.batch["image0"], step.batch["image1"]]).to(step.device, non_blocking=True)


@provides("correspondences")
def correspondences(step: StepInputs) -> List[Correspondences]:
    """Per image pair with at least 8 valid cells, ``train.points_per_image`` sampled coarse matches."""
    picks = []
    width = step.batch["image1"].shape[-1] // 8
    for i in range(len(step.batch["image0"])):
        valid = step.batch["valid01"][i].flatten().nonzero()[:, 0]
        if len(valid) < 8:
            continue
        order = torch.randperm(len(valid), generator=step.generator)[: step.conf["train"]["points_per_image"]]
        pick = valid[order]
        points1 = step.batch["warp01"][i].reshape(-1, 2)[pick]
        cells1 = (points1[:, 1] // 8).long() * width + (points1[:, 0] // 8).long()
        once = first_occurrences(cells1)  # where image 1 is smaller, two cells can land in one
        picks.append(Correspondences(i, pick[once].to(step.device), cells1[once].to(step.device)))
    return picks


def first_occurrences(values: torch.Tensor) -> torch.Tensor:
    """Mask (N,) of the first occurrence of each value of ``values`` (N,)."""
    unique, inverse = torch.unique(values, return_inverse=True)
    first = torch.full((len(unique),), len(values), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(len(values)), reduce="amin")
    return torch.zeros(len(values), dtype=torch.bool).index_fill_(0, first, True)


@provides("descriptors", needs=("student",))
def descriptors(step: StepInputs) -> torch.Tensor:
    return F.normalize(step["student"]["dense_descriptors"], dim=1)


@provides("matches", needs=("student", "correspondences"))
def matches(step: StepInputs) -> List[Match]:
    """Descriptors of the true coarse matches, cell to cell as XFeat matches them (not interpolated
    within image 1, which would teach neighbouring cells to look alike)."""
    dense = step["student"]["dense_descriptors"].flatten(2)
    b = len(step.batch["image0"])
    out = []
    for c in step["correspondences"]:
        raw0, raw1 = dense[c.pair, :, c.cells0].t(), dense[b + c.pair, :, c.cells1].t()
        out.append(Match(c.pair, c.cells0, c.cells1, raw0, raw1, F.normalize(raw0, dim=1), F.normalize(raw1, dim=1)))
    return out


@provides("fine_targets", needs=("correspondences",))
def fine_targets(step: StepInputs) -> Optional[FineTargets]:
    """XFeat* refinement labels for the true coarse matches (cell of image 0, image-1 cell its centre lands in).

    Inference puts both keypoints at their cell corners and moves the image-0 one by the predicted
    offset, so the label is where the image-1 corner truly lands in image 0 (``corners10``, from the
    data), minus the image-0 corner. Matches whose offset no bin can decode within 0.5 px are left out.
    """
    b, width = len(step.batch["image0"]), step.batch["image0"].shape[-1] // 8
    rows0, cells0, rows1, cells1, offsets = [], [], [], [], []
    for c in step["correspondences"]:
        landing = step.batch["corners10"][c.pair].reshape(-1, 2).to(step.device)[c.cells1]
        corner0 = torch.stack([c.cells0 % width, c.cells0 // width], 1).float() * 8
        offset = landing - corner0
        keep = step.batch["corners10_valid"][c.pair].flatten().to(step.device)[c.cells1] & representable(offset)
        rows0.append(torch.full((int(keep.sum()),), c.pair, device=step.device))
        rows1.append(torch.full((int(keep.sum()),), b + c.pair, device=step.device))
        cells0.append(c.cells0[keep])
        cells1.append(c.cells1[keep])
        offsets.append(offset[keep])
    if sum(len(o) for o in offsets) < 2:
        return None
    return FineTargets(tuple(torch.cat(x) for x in (rows0, cells0, rows1, cells1)), torch.cat(offsets))


@provides("teacher", needs=("images",), missing=lambda conf: None if conf["teacher"]["checkpoint"] else TEACHER)
def teacher(step: StepInputs) -> Dict[str, torch.Tensor]:
    with torch.no_grad(), step.trainer.autocast():
        return floats(step.trainer.teacher(step["images"]))


def uses_xfeat_teacher(conf: dict) -> bool:
    return conf["losses"]["keypoint_teacher"] == "xfeat"


@provides("xfeat_teacher", needs=("images",),
          missing=lambda conf: None if uses_xfeat_teacher(conf) else
          "the frozen official XFeat as teacher (losses.keypoint_teacher=xfeat)")
def xfeat_teacher(step: StepInputs) -> Dict[str, torch.Tensor]:
    """The frozen official XFeat's maps of this step's images."""
    with torch.no_grad(), step.trainer.autocast():
        return floats(step.trainer.xfeat_teacher.forward_maps(step["images"]))


@provides("keypoint_targets", needs=lambda conf: ("xfeat_teacher",) if uses_xfeat_teacher(conf) else ("teacher",))
def keypoint_targets(step: StepInputs) -> torch.Tensor:
    """The keypoint teacher's 65-bin distribution per cell: a frozen official XFeat's or the SFD2 teacher's."""
    if uses_xfeat_teacher(step.conf):
        return teacher_cell_targets(step["xfeat_teacher"]["keypoint_logits"])
    return teacher_cell_targets(step["teacher"]["score_logits"])


@provides("teacher_reliability", needs=("xfeat_teacher",))
def teacher_reliability(step: StepInputs) -> torch.Tensor:
    return step["xfeat_teacher"]["reliability"]


def has_stability_labels(conf: dict) -> bool:
    return bool(conf["data"]["mix"].get("synthetic", 0) > 0 and conf["data"]["synthetic"].get("labels"))


def uses_sfd2_stability(conf: dict) -> bool:
    return conf["teacher"]["stability"] == "sfd2"


@provides("stability_teacher", needs=lambda conf: ("teacher",) if uses_sfd2_stability(conf) else ("images",))
def stability_teacher(step: StepInputs) -> torch.Tensor:
    """The stability teacher's logits (2B, 3, h, w): the SFD2 teacher's, or a fused model's trained head
    (default: the packaged CamVid head), for images without labels."""
    if uses_sfd2_stability(step.conf):
        return step["teacher"]["stability_logits"]
    with torch.no_grad(), step.trainer.autocast():
        return step.trainer.stability_teacher(step["images"])["stability_logits"].float()


@provides("stability_labels", needs=("stability_teacher",))
def stability_labels(step: StepInputs) -> Tuple[torch.Tensor, torch.Tensor]:
    """Labels (2B, h, w) and per-cell weights: ADE20K maps where given, else the stability teacher's
    confident predictions (dual thresholds: confident cells weigh 1, less confident ones ``mid_weight``)."""
    labels = torch.cat([step.batch["labels0"], step.batch["labels1"]]).to(step.device)
    weights = (labels >= 0).float()
    logits = F.interpolate(step["stability_teacher"], labels.shape[-2:], mode="bilinear", align_corners=False)
    pseudo, pseudo_weights = pseudo_labels(logits, **step.conf["data"]["pseudo_labels"])
    missing = labels < 0
    return torch.where(missing, pseudo, labels), torch.where(missing, pseudo_weights, weights)


@provides("student", needs=("images",))
def student(step: StepInputs) -> Dict[str, torch.Tensor]:
    teacher_descriptors = step["teacher"]["descriptors"] if "adapted_teacher" in step.wanted else None
    fine = step["fine_targets"] if "fine_logits" in step.wanted else None
    with step.trainer.autocast():
        maps = step.trainer.net(step["images"], teacher_descriptors, fine.query if fine is not None else None)
    return floats(maps)


@provides("adapted_teacher", needs=("student", "teacher"))
def adapted_teacher(step: StepInputs) -> torch.Tensor:
    return step["student"]["adapted_teacher"]


@provides("fine_logits", needs=("student", "fine_targets"))
def fine_logits(step: StepInputs) -> Optional[torch.Tensor]:
    return step["student"].get("fine_logits")


@provides("warps")
def warps(step: StepInputs) -> Dict[str, torch.Tensor]:
    return {k: step.batch[k].to(step.device) for k in ("warp01", "valid01", "warp10", "valid10")}


@provides("prototype_bank")
def prototype_bank(step: StepInputs):
    return step.trainer.prototypes
