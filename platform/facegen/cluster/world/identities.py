"""The world's identity space: a few hundred people made as blends of K anchor faces, split into regions before any
figure is computed. Plain numpy: no model, no photo.

An identity is a weight vector w over the anchors (w ≥ 0, Σw = 1; its face is Σ wₖ · aligned anchor faceₖ, see
people.blend_views) and its conditioning for the base models is a fixed function of w: S* = Σ wₖ · anchor tokenₖ
(base.py) — never a free per-identity parameter and never computed from a face recognizer.

Regions. Anchor *pairs* are reserved before anything is built: a pair reserved for validation or held-out is never
blended together in training (no training identity puts weight on both). So a held-out identity, a blend of a
reserved pair with every weight ≥ `min_weight`, lies in a region of weight space that no training identity comes
near (the nearest is ≥ 0.4 away in L2 at the defaults), and drawing it needs the base model and the encoders to
carry a face they never saw — a lookup of the nearest training person (`nearest_train`) cannot score as well.
  train        the anchors themselves, blends of the other pairs, and triples all of whose pairs are training pairs
  validation   blends of `validation_pairs` reserved pairs: the only identities that choose settings
  held_out     blends of `held_out_pairs` other reserved pairs: reported, chose nothing, seen by no model
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "validation", "held_out")


@dataclass(frozen=True)
class Identity:
    name: str  # "id042": the base model's word for a training identity (two added tokens, base.py)
    weights: tuple[float, ...]  # over the anchors, summing to 1
    split: str  # train | validation | held_out

    @property
    def w(self) -> np.ndarray:
        return np.asarray(self.weights, np.float64)

    @property
    def anchors(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(self.w > 0))


def reserve_pairs(k: int, validation: int, held_out: int, rng: np.random.Generator) -> tuple[list, list]:
    """Disjoint sets of anchor pairs for validation and held-out, drawn so that every anchor keeps at least two
    training pairs (else an anchor would only be seen alone)."""
    pairs = list(itertools.combinations(range(k), 2))
    if validation + held_out > len(pairs) - k:
        raise ValueError(f"{k} anchors have {len(pairs)} pairs: too few to reserve {validation} + {held_out}")
    for _ in range(1000):
        order = rng.permutation(len(pairs))
        chosen = [pairs[i] for i in order[: validation + held_out]]
        train = set(pairs) - set(chosen)
        degree = np.zeros(k, int)
        for a, b in train:
            degree[a] += 1
            degree[b] += 1
        if degree.min() >= 2:
            return chosen[:validation], chosen[validation:]
    raise ValueError(f"cannot reserve {validation} + {held_out} pairs of {k} anchors and keep each in training")


def make_identities(k: int, count: int, validation_pairs: int, held_out_pairs: int, per_pair: int,
                    min_weight: float, min_distance: float, seed: int) -> list[Identity]:
    """`count` training identities (the k anchors first), `per_pair` validation / held-out identities per reserved
    pair, all seeded. Held-out and validation weights lie in [min_weight, 1 − min_weight], identities of one region
    pairwise ≥ min_distance apart (L2 in weight space)."""
    rng = np.random.default_rng(seed)
    validation, held_out = reserve_pairs(k, validation_pairs, held_out_pairs, rng)
    reserved = set(validation) | set(held_out)
    out: list[Identity] = []

    def add(w: np.ndarray, split: str) -> None:
        out.append(Identity(f"id{len(out):03d}", tuple(float(x) for x in w / w.sum()), split))

    for split, pairs in (("held_out", held_out), ("validation", validation)):
        # evenly spread over [min_weight, 1 − min_weight] on each pair's segment, seeded jitter; far enough apart
        levels = np.linspace(min_weight, 1 - min_weight, per_pair) if per_pair > 1 else np.array([0.5])
        for a, b in pairs:
            for level in levels:
                for _ in range(100):
                    x = float(np.clip(level + rng.uniform(-0.05, 0.05), min_weight, 1 - min_weight))
                    w = np.zeros(k)
                    w[a], w[b] = x, 1 - x
                    if all(distance(w, o.w) >= min_distance for o in out if o.split == split):
                        add(w, split)
                        break
    for i in range(k):  # the anchors themselves
        add(np.eye(k)[i], "train")
    train_pairs = [p for p in itertools.combinations(range(k), 2) if p not in reserved]
    triples = [t for t in itertools.combinations(range(k), 3)
               if not any(p in reserved for p in itertools.combinations(t, 2))]
    trained = [o.w for o in out if o.split == "train"]
    attempts = 0
    while sum(o.split == "train" for o in out) < count and attempts < 100 * count:
        attempts += 1
        if rng.random() < 0.6 or not triples:
            a, b = train_pairs[rng.integers(len(train_pairs))]
            x = rng.uniform(0.15, 0.85)
            w = np.zeros(k)
            w[a], w[b] = x, 1 - x
        else:
            t = triples[rng.integers(len(triples))]
            w = np.zeros(k)
            w[list(t)] = rng.dirichlet([2.0, 2.0, 2.0])
            if w[list(t)].min() < 0.1:
                continue
        if min(distance(w, v) for v in trained) < 0.05:  # no near-duplicates among training identities
            continue
        trained.append(w)
        add(w, "train")
    return out


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def nearest_train(identities: list[Identity], identity: Identity) -> Identity:
    """The training identity nearest in weight space (not itself): what a lookup of known people would draw."""
    train = [o for o in identities if o.split == "train" and o.name != identity.name]
    return min(train, key=lambda o: distance(o.w, identity.w))


def split(identities: list[Identity], name: str) -> list[Identity]:
    return [o for o in identities if o.split == name]
