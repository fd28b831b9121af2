"""How well inferred stroke programs parse Omniglot characters, against how people drew them.

For each of the first ``COUNT`` drawings of ``background_small1``, an engine infers a paint
program for the 64x64 image; its pen paths (consecutive drawing steps joined, jumps lifting
the pen) are compared with the drawer's ground-truth strokes: number of strokes and the
symmetric Chamfer distance in pixels of the 64x64 canvas (``spiral_ppl.metrics``).

Run: ``SPIRAL_PPL_DATA=../shared/data .venv/bin/python benchmarks/omniglot_parsing.py [COUNT] [RENDERS]``
"""

import json
import sys

import numpy as np
import torch

import spiral_ppl as sp
from spiral_ppl.metrics import parsing_scores, pen_paths

count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
renders = int(sys.argv[2]) if len(sys.argv) > 2 else 600
torch.manual_seed(0)

agent = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
prog = agent.prog
images = sp.data.Omniglot(split="background_small1", source="png", image_size=prog.image_size, download=False)
strokes = sp.data.OmniglotStrokes(split="background_small1", download=False)
# PNG members are sorted like stroke files, so item i of both is the same drawing.
drawings = [strokes[i] for i in range(count)]
targets = images.images(range(count))
assert all(int(images.character_ids[i]) == drawings[i].character_id for i in range(count))

engines = {
    "spiral (one pass)": (agent, prog.steps),
    "spiral-guided SMC": (agent.smc(), renders),
    "SMC (prior)": (sp.inference.SMC.paper_baseline(), renders),
}
summary = {}
for name, (engine, budget) in engines.items():
    result = engine.infer(prog, targets, sp.Budget(renders=budget), seed=0)
    scores = []
    for index, drawing in enumerate(drawings):
        paths = pen_paths(prog.renderer, {k: v[index] for k, v in result.actions.items()})
        if paths:
            scores.append(parsing_scores(paths, drawing.scaled(prog.image_size)))
    summary[name] = {
        "renders": budget,
        "mean_l2": float(result.l2.mean()),
        "drawings_with_ink": len(scores),
        "mean_inferred_strokes": float(np.mean([s["inferred_strokes"] for s in scores])),
        "mean_true_strokes": float(np.mean([len(d.strokes) for d in drawings])),
        "mean_stroke_count_error": float(np.mean([s["stroke_count_error"] for s in scores])),
        "mean_chamfer_px": float(np.mean([s["chamfer"] for s in scores])),
    }
    print(name, json.dumps(summary[name]), flush=True)
