"""Weight averaging of refiner checkpoints: a greedy "model soup" (Wortsman et al., ICML 2022,
"Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time").

Refiner runs that start from one another's weights (`train-refiner --init`) stay in one basin of
the loss, so the plain mean of their parameters is itself a good generator, often better than any
one of them: the average cancels part of each run's late, noisy drift (constant-rate Adam against a
discriminator never settles). The greedy soup orders the candidates by their own validation score
and adds each to the average only if the average's validation score does not get worse:

    soup_0 = {best candidate};  soup_k = soup_{k-1} + {c_k}  if score(mean(soup_{k-1} + {c_k})) <= score(mean(soup_{k-1}))

The score is `train-refiner`'s selection score on the same validation pairs (the first held-out
identities), so the test pairs stay unseen. The result has the same architecture and the same
inference cost as one refiner.

    facesynth soup-refiners --data PAIRS --out SOUP.pt WEIGHTS [WEIGHTS ...]
"""
from __future__ import annotations

from pathlib import Path

from face3d.errors import FaceSynthError
from ganrefine.refiner import RefinerGenerator
from ganrefine.train_refiner import PairSet, TrainConfig, evaluate_refiner, summarise, validation_files
from ganrefine.training import frozen_identity_encoder
from ganrefine.weights import load_refiner


def average_state_dicts(states: list[dict]) -> dict:
    """The element-wise mean of equally shaped state dicts (floating tensors; others from the first)."""
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def greedy_soup(candidates: list[Path], data_dir: Path, val_pairs: int | None = None, progress: bool = True) -> dict:
    """Greedy soup of refiner weights files, scored on the validation pairs of `data_dir`.

    Returns {"generator": the souped generator (eval mode), "ingredients": [paths kept],
    "val": its validation summary, "rows": one row per candidate (own score, soup score, kept)}."""
    if not candidates:
        raise FaceSynthError("soup-refiners: no weights given")
    # the candidates first (read as tensors and plain data, see `load_refiner`): a file that is no
    # refiner stops the run before the validation pairs and the identity encoder are loaded
    loaded = [(Path(c), *load_refiner(c)) for c in candidates]
    val = PairSet.load(validation_files(data_dir, TrainConfig.val_pairs if val_pairs is None else val_pairs),
                       progress=False)
    encoder = frozen_identity_encoder()
    cfg = loaded[0][1].cfg
    for path, g, _ in loaded:
        if g.cfg != cfg:
            raise FaceSynthError(f"{path}: a refiner of another architecture than {loaded[0][0]}")

    def score(generator) -> dict:
        return summarise(evaluate_refiner(generator, val, encoder))

    own = []
    for path, g, _ in loaded:
        s = score(g)
        own.append((s["score"], path, g.state_dict(), s))
        if progress:
            print(f"  {path}: validation score {s['score']:.4f}", flush=True)
    own.sort(key=lambda r: r[0])

    # each trial average goes into a generator of its own: a state dict holds the candidate's parameters
    # themselves, so loading an average into a candidate would overwrite that ingredient
    work = RefinerGenerator(cfg).eval()
    kept_states, kept_paths = [own[0][2]], [own[0][1]]
    best = own[0][3]
    rows = [{"weights": str(own[0][1]), "own_score": own[0][0], "soup_score": best["score"], "kept": True}]
    for own_score, path, state, _ in own[1:]:
        work.load_state_dict(average_state_dicts(kept_states + [state]))
        s = score(work)
        keep = s["score"] <= best["score"]
        rows.append({"weights": str(path), "own_score": own_score, "soup_score": s["score"], "kept": keep})
        if progress:
            print(f"  + {path}: soup score {s['score']:.4f} ({'kept' if keep else 'left out'})", flush=True)
        if keep:
            kept_states.append(state)
            kept_paths.append(path)
            best = s
    work.load_state_dict(average_state_dicts(kept_states))
    return {"generator": work, "ingredients": kept_paths, "val": best, "rows": rows}
