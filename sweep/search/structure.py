"""How a trial lays its sparsity over the model: the pattern of the zeros
(`search.pattern`), which layers it prunes (`search.policy`) and how much of each layer
(`search.per_layer`). Pure Python: `sweep.modeling.pruning` hands the result to tfmot.

Patterns, as tfmot's `prune_low_magnitude` arguments:

* `unstructured`: the smallest weights of the layer, anywhere.
* `"M:N"`: at most M non-zeros in every N consecutive weights along the input-channel axis
  (sparse tensor cores' 2:4), tfmot's `sparsity_m_by_n`, which counts zeros: (N - M, N).
  tfmot sets these masks once, at the first training step, and keeps them: such a layer's
  sparsity is 1 - M/N whatever `final_sparsity` and the schedule say.
* `"RxC"`: whole-zero blocks of R input by C output weights, tfmot's `block_size`; the
  schedule decides how many blocks.

A layer a pattern does not fit is pruned unstructured along the schedule, never an error
(but a pattern that fits no pruned layer at all is refused: `sweep.modeling.pruning.check_prunable`):
M:N needs a Dense or Conv2D kernel whose input channels are a multiple of N (a first conv
on 1 or 3 channels is not); a block needs a 2-D kernel (Dense; tfmot refuses blocks on a
conv) that whole blocks tile (no partial blocks at the edges, which block-sparse kernels
cannot use and which would miss the layer's target). Each trial records what every layer
got (`LayerPruning`).

Per-layer targets (`per_layer: true`): each schedule-following layer keeps a density
proportional to ER^a, where ER is the layer's kernel (sum of its dimensions over their
product: the Erdős–Rényi-kernel rule of RigL, Evci et al. 2020) and `a` is the searched
`allocation` in [0, 1]. The densities are scaled so that these layers together keep
`final_sparsity` of their weights; a layer that would be denser than dense stays dense
and the others share the rest. a = 0 gives every layer `final_sparsity`; a = 1 keeps
small layers (a first conv) denser and prunes big ones harder. One searched number
whatever the depth: dozens of per-layer offsets would need far more trials than a study
runs.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sweep.config import PATTERN

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Structure:
    """A trial's choices (its params `pattern`, `policy`, `allocation`)."""

    pattern: str = "unstructured"
    policy: str = "all"
    allocation: float | None = None  # per_layer only


@dataclass(frozen=True)
class LayerPruning:
    """What one pruned layer gets: its pattern and its target sparsity."""

    pattern: str
    target: float


@dataclass(frozen=True)
class Pattern:
    name: str

    @property
    def m_of_n(self) -> tuple[int, int] | None:
        """(M non-zeros, of N weights) for an M:N pattern."""
        match = PATTERN.match(self.name)
        return (int(match["m"]), int(match["n"])) if match and match["m"] else None

    @property
    def block(self) -> tuple[int, int] | None:
        match = PATTERN.match(self.name)
        return (int(match["rows"]), int(match["cols"])) if match and match["rows"] else None

    def fits(self, shapes: Sequence[Shape]) -> bool:
        """Whether every pruned weight of a layer can take this pattern."""
        if self.m_of_n:
            n = self.m_of_n[1]
            # the input-channel axis: (in, out) for Dense, (h, w, in, out) for Conv2D
            return all(len(s) in (2, 4) and s[-2] % n == 0 for s in shapes)
        if self.block:
            rows, cols = self.block
            return all(len(s) == 2 and s[0] % rows == 0 and s[1] % cols == 0 for s in shapes)
        return True

    def requirement(self) -> str:
        """What a layer needs for this pattern, as `fits` checks it (for messages)."""
        if self.m_of_n:
            return f"a Dense or Conv2D kernel whose input channels are a multiple of {self.m_of_n[1]}"
        if self.block:
            rows, cols = self.block
            return f"a Dense kernel whose inputs are a multiple of {rows} and outputs a multiple of {cols}"
        return "any prunable layer"

    @property
    def sparsity(self) -> float | None:
        """The sparsity the pattern itself sets (M:N), or None where the schedule sets it."""
        return 1 - self.m_of_n[0] / self.m_of_n[1] if self.m_of_n else None

    def tfmot_arguments(self) -> dict[str, tuple[int, int]]:
        if self.m_of_n:
            m, n = self.m_of_n
            return {"sparsity_m_by_n": (n - m, n)}
        if self.block:
            return {"block_size": self.block}
        return {}


def plan_layers(
    shapes: Mapping[str, Sequence[Shape]], structure: Structure, final_sparsity: float,
    patternable: Collection[str] | None = None,
) -> dict[str, LayerPruning]:
    """Each prunable layer's pattern and target (`shapes`: its pruned weights' shapes, by
    layer name, in model order; `patternable`: the Dense and Conv2D layers among them, the
    only ones a pattern may apply to, by default all)."""
    pattern = Pattern(structure.pattern)
    allowed = set(shapes if patternable is None else patternable)
    fitted = {name: pattern if name in allowed and pattern.fits(s) else Pattern("unstructured")
              for name, s in shapes.items()}
    scheduled = {name: s for name, s in shapes.items() if fitted[name].sparsity is None}
    targets = (
        allocate(scheduled, final_sparsity, structure.allocation)
        if structure.allocation is not None
        else dict.fromkeys(scheduled, final_sparsity)
    )
    return {
        name: LayerPruning(p.name, p.sparsity if p.sparsity is not None else targets[name])
        for name, p in fitted.items()
    }


def allocate(shapes: Mapping[str, Sequence[Shape]], sparsity: float, exponent: float) -> dict[str, float]:
    """Per-layer sparsities that keep `sparsity` of all the layers' weights, each layer's
    density proportional to its Erdős–Rényi-kernel score to the power `exponent`."""
    if not shapes or sparsity <= 0:  # no layer follows the schedule (M:N fits them all), or nothing to prune
        return dict.fromkeys(shapes, 0.0)
    sizes = {name: sum(math.prod(s) for s in layer) for name, layer in shapes.items()}
    scores = {name: erdos_renyi(layer) ** exponent for name, layer in shapes.items()}
    kept = (1 - sparsity) * sum(sizes.values())  # weights left non-zero
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        scale = (kept - sum(sizes[n] for n in dense)) / sum(scores[n] * sizes[n] for n in rest)
        overfull = {n for n in rest if scale * scores[n] > 1}
        if not overfull:
            break
        dense |= overfull
    return {n: 0.0 if n in dense else 1 - scale * scores[n] for n in shapes}


def erdos_renyi(shapes: Sequence[Shape]) -> float:
    """The mean over `shapes` of each kernel's sum of dimensions over their product: small
    kernels score high."""
    return sum(sum(s) / math.prod(s) for s in shapes) / len(shapes)
