"""Appearance beyond the morphable model's PCA: hair with volume, eyewear, facial hair,
skin detail, clothing at the neck, catch-lights in the eyes, shiny skin.

Why: renders of a PCA model read as shop-window mannequins (bald or painted caps, nobody
in glasses, smooth skin); a network trained only on them never learns to ignore what
real photos have. DigiFace-1M found hair, accessories and texture variety each worth
points of real-face accuracy. Every part is procedural (nothing downloaded), works for
any model with the five alignment landmarks (zones are placed in a face frame, see
``frame.py``; the embedded model's named regions refine them), and is a scene option:

    --appearance full                  every part at its default probability
    --appearance full,eyewear=0        every part but glasses (an ablation cell)
    --appearance hair=1,beard=0.5      only these
    --appearance full,shine=0.6        every part, and shiny skin (not in `full`)

Each value is a probability: of an identity having hair (else bald), facial hair, skin
detail (freckles, moles, blemishes, age spots), shiny skin or being a glasses wearer (who
wears them in 3 of 4 images; anyone may wear sunglasses now and then); of an image
showing a collar and catch-lights. ``hair_vary`` is the probability that an image
re-draws its identity's hairstyle. What each image got is recorded in its params
(``appearance``); it is a pure function of (seed, identity, sample).

``shine``: specular highlights under the image's light (:mod:`morphgen.render.specular`),
for an identity with a strength (0.2 to 1) and a T-zone share (0: the cheeks shine 0.6
as much as forehead, nose and chin; 1: only the T-zone shines). It is not in ``full``
(its probability there is 0) because its effect on recognition is not yet measured:
opt in with ``full,shine=0.6``.

Rendering: the parts are vertex positions and albedo: extra vertices (a hair shell,
glasses) with a fixed triangle list appended to the model's, and albedo layers on the
model's vertices, computed by ``Appearance.apply`` with numpy (CPU renderer) or torch
(GPU renderer) from the same numbers, so every backend draws the same pixels. Shine is
per-vertex specular weights (``Appearance.specular``) that the renderers take beside
them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..model import MorphableModel
from ..probspec import parse_probabilities, to_spec
from . import eyewear, hair
from .frame import (beard_fields, catchlight_field, clothing_band, face_frame, five_points, mesh_smoother, region,
                    shine_fields, spot_fields, vertex_normals)

PARTS = ("hair", "eyewear", "beard", "skin", "clothing", "eyes", "shine", "hair_vary")
PRESETS = {"off": {}, "full": {"hair": 0.92, "eyewear": 0.25, "beard": 0.3, "skin": 0.7, "clothing": 0.9,
                               "eyes": 0.9}}
BEARD_STYLES = {"stubble": (0.5, 0.6, 0.7, 0.5, 0.4), "moustache": (1, 0, 0, 0, 0), "goatee": (1, 1, 0, 0, 0),
                "chin_strap": (0, 0.8, 1, 0, 1), "full": (1, 1, 1, 0.8, 1)}
SPOT_KINDS = 4
SHINE_CHEEKS = 0.6   # how much the cheeks shine, relative to the T-zone, at a T-zone share of 0
_FIELD_SEED = 0x61707072


@dataclass(frozen=True)
class AppearanceConfig:
    """Probability of each part (0 = never); see the module notes."""
    probs: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, spec) -> "AppearanceConfig":
        if isinstance(spec, AppearanceConfig):
            return spec
        return cls(parse_probabilities(spec, PARTS, PRESETS, "--appearance"))

    @property
    def active(self) -> bool:
        return any(k != "hair_vary" for k, _ in self.probs)

    def to_spec(self) -> str:
        return to_spec(self.probs)

    def sample(self, identity_rng: np.random.Generator, image_rng: np.random.Generator) -> dict:
        """One image's appearance (JSON-able). Identity-level choices come from
        `identity_rng` (the same for all of an identity's images), the rest from
        `image_rng`; every draw happens whether used or not, so one probability never
        shifts another part's draws."""
        p = dict(self.probs)
        ir, mr = identity_rng, image_rng
        out: dict = {}
        # identity: hair, beard, skin, glasses
        u = ir.random(4)
        style, beard, skin, glasses = hair.sample_style(ir), _beard(ir), _skin(ir), eyewear.sample_style(ir)
        has_shine, shine = ir.random(), _shine(ir)   # after the others: older records keep their draws
        # image
        v = mr.random(5)
        redrawn, spare_glasses, cloth = hair.sample_style(mr), eyewear.sample_style(mr), _clothing(mr)
        if "hair" in p:
            out["hair"] = (redrawn if v[0] < p.get("hair_vary", 0.0) else style) if u[0] < p["hair"] else None
        if "beard" in p:
            out["beard"] = beard if u[1] < p["beard"] else None
        if "skin" in p:
            out["skin"] = skin if u[2] < p["skin"] else None
        if "eyewear" in p:
            wearer = u[3] < p["eyewear"]
            if wearer and v[1] < 0.75:
                out["eyewear"] = glasses
            elif v[2] < 0.03:
                out["eyewear"] = dict(spare_glasses, sun=True)
            else:
                out["eyewear"] = None
        if "clothing" in p:
            out["clothing"] = cloth if v[3] < p["clothing"] else None
        if "eyes" in p:
            out["eyes"] = {"catchlight": round(float(0.5 + 0.5 * mr.random()), 3)} if v[4] < p["eyes"] else None
        if "shine" in p:
            out["shine"] = shine if has_shine < p["shine"] else None
        return out


def _beard(rng: np.random.Generator) -> dict:
    style = list(BEARD_STYLES)[int(rng.choice(len(BEARD_STYLES), p=(0.4, 0.15, 0.15, 0.1, 0.2)))]
    density = rng.uniform(0.25, 0.6) if style == "stubble" else rng.uniform(0.6, 0.95)
    shade = np.array(hair.COLORS[list(hair.COLORS)[int(rng.choice(len(hair.COLORS), p=hair.COLOR_P))]])
    return {"style": style, "density": round(float(density), 3),
            "color": np.round(np.clip(shade * np.exp(rng.normal(0, 0.15, 3)), 0.01, 0.9), 4).tolist(),
            "thickness": round(float(rng.uniform(1.5, 5.0) if style == "full" else 0.0), 2)}


def _skin(rng: np.random.Generator) -> dict:
    def pick(kind_first: int, n: int, k: int, lo: float, hi: float):
        idx = rng.choice(n, k, replace=False) + kind_first
        return [[int(i), round(float(rng.uniform(lo, hi)), 3)] for i in idx]

    spots = []
    if rng.random() < 0.3:
        spots += pick(0, 16, 1, 0.2, 0.5)                 # freckles
    spots += pick(16, 12, int(rng.integers(0, 3)), 0.4, 0.8)   # moles
    spots += pick(28, 8, int(rng.integers(0, 3)), 0.1, 0.35)   # blemishes, redness
    if rng.random() < 0.3:
        spots += pick(36, 8, 1, 0.15, 0.35)               # age spots
    return {"spots": spots, "redness": round(float(rng.uniform(0.0, 0.1)), 3)}


def _shine(rng: np.random.Generator) -> dict:
    """An identity's shiny skin: its strength and the share of it confined to the T-zone."""
    return {"strength": round(float(rng.uniform(0.2, 1.0)), 3), "tzone": round(float(rng.random()), 3)}


def _clothing(rng: np.random.Generator) -> dict:
    def colour():
        h, s, v = rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.05, 0.9)
        i, f = int(h * 6) % 6, h * 6 - int(h * 6)
        a, b, c = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
        return [round(float(x), 4) for x in [(v, c, a), (b, v, a), (a, v, c), (a, b, v), (c, a, v), (v, a, b)][i]]

    return {"color": colour(), "color2": colour(),
            "stripes": round(float(rng.uniform(8, 30) if rng.random() < 0.3 else 0.0), 2)}


class Appearance:
    """The static side of appearance for one model: zones, spot patterns, the hair shell
    and the eyewear mesh; ``arrays`` turns params into batch arrays, ``apply`` dresses
    decoded meshes."""

    def __init__(self, model: MorphableModel):
        self.model = model
        mean = model.shape.mean.reshape(-1, 3).astype(np.float64)
        if model.expression is not None:
            mean = mean + model.expression.mean.reshape(-1, 3)
        self.n = len(mean)
        self.groups = [np.atleast_1d(np.asarray(g, np.int64)) for g in model.five_point_vertices()]
        fr = face_frame(five_points(model, mean))
        c = fr.coords(mean)
        normals = vertex_normals(mean, model.triangles)
        smooth = mesh_smoother(model.triangles, self.n)
        skin = region(model, "skin")
        skin = np.ones(self.n, bool) if skin is None else skin
        self.normals = normals.astype(np.float32)
        self.beard = beard_fields(model, c, normals @ fr.axes.T, smooth)                 # (5, N)
        self.band = clothing_band(model, c, smooth)                                       # (N,)
        self.band_v = c[:, 1].astype(np.float32)
        spots, kinds = spot_fields(model, mean, c, skin, np.random.default_rng(_FIELD_SEED))
        self.spots, self.spot_kinds = spots, kinds                                        # (K, N), (K,)
        self.catchlight = catchlight_field(model, mean, c)                                # (N,)
        self.shine = shine_fields(model, c, smooth)                                       # (2, N)
        # the vertices each layer can touch: dressing blends only these (a quarter of the
        # face for beards, a tenth for catch-lights, the neck for the band)
        self.beard_on = np.flatnonzero(np.abs(self.beard).sum(0) > 0)
        self.band_on = np.flatnonzero(self.band > 0)
        self.catchlight_on = np.flatnonzero(self.catchlight > 0)
        self.shell = hair.build_shell(model, mean, c, normals)
        self.m = 0 if self.shell is None else len(self.shell.src)

    @cached_property
    def triangles(self) -> np.ndarray:
        """The model's triangles, then the hair shell's, then the glasses' (front copy, and
        a reversed copy on duplicated vertices: thin parts are seen from both sides)."""
        t = [np.asarray(self.model.triangles, np.int32)]
        if self.shell is not None:
            t.append(self.shell.triangles + self.n)
        g0 = self.n + self.m
        t.append(eyewear.TRIANGLES + g0)
        t.append(eyewear.TRIANGLES[:, ::-1] + g0 + eyewear.N_VERTICES)
        return np.ascontiguousarray(np.concatenate(t), np.int32)

    @property
    def n_extra(self) -> int:
        return self.m + 2 * eyewear.N_VERTICES

    def arrays(self, looks: list[dict]) -> dict[str, np.ndarray]:
        """Batch arrays of the params' ``appearance`` dicts (what a render plan carries)."""
        b = len(looks)
        hp = np.zeros((b, hair.N_PARAMS), np.float32)
        hc = np.zeros((b, 3), np.float32)
        bw = np.zeros((b, 5), np.float32)
        bc = np.zeros((b, 3), np.float32)
        bt = np.zeros(b, np.float32)
        sw = np.zeros((b, len(self.spots)), np.float32)
        red = np.zeros(b, np.float32)
        gl = np.zeros((b, eyewear.N_VERTICES, 3), np.float32)
        gc = np.zeros((b, 3), np.float32)
        lc = np.zeros((b, 3), np.float32)
        cc = np.zeros((b, 2, 3), np.float32)
        cs = np.zeros(b, np.float32)
        con = np.zeros(b, np.float32)
        cl = np.zeros(b, np.float32)
        sn = np.zeros((b, 2), np.float32)
        for i, a in enumerate(looks):
            a = a or {}
            h = a.get("hair")
            hp[i] = hair.param_vector(h)
            if h:
                hc[i] = h["color"]
            if a.get("beard"):
                bd = a["beard"]
                bw[i] = np.asarray(BEARD_STYLES[bd["style"]], np.float32) * bd["density"]
                bc[i], bt[i] = bd["color"], bd["thickness"]
            if a.get("skin"):
                for k, w in a["skin"]["spots"]:
                    sw[i, k] = w
                red[i] = a["skin"]["redness"]
            g = a.get("eyewear")
            gl[i] = eyewear.frame_coords(g)
            if g:
                gc[i], lc[i] = g["frame_color"], g["lens_color"]
            if a.get("clothing"):
                cc[i] = [a["clothing"]["color"], a["clothing"]["color2"]]
                cs[i], con[i] = a["clothing"]["stripes"], 1.0
            if a.get("eyes"):
                cl[i] = a["eyes"]["catchlight"]
            if a.get("shine"):   # the weights of shine_fields' face and T-zone fields
                cheeks = SHINE_CHEEKS * (1.0 - a["shine"]["tzone"])
                sn[i] = np.array([cheeks, 1.0 - cheeks]) * a["shine"]["strength"]
        return {"hair": hp, "hair_color": hc, "beard": bw, "beard_color": bc, "beard_thickness": bt, "spots": sw,
                "redness": red, "glasses": gl, "glasses_color": gc, "lens_color": lc, "cloth": cc,
                "cloth_stripes": cs, "cloth_on": con, "catchlight": cl, "shine": sn}

    def apply(self, vertices, albedo, arr: dict, xp):
        """(vertices, albedo) of the model's mesh, (B, N, 3) each, dressed: (B, N + n_extra, 3)
        each, in the order of ``triangles``. xp is numpy or torch (then `arr` holds tensors
        on the meshes' device)."""
        t = _Tensors(xp, vertices)
        v, a = vertices, albedo
        # facial hair: a slight volume for full beards (on the vertices a beard can cover)
        bi = t.i(self.beard_on)
        beard = t.c(arr["beard"]) @ t.f(self.beard[:, self.beard_on])                  # (B, n_beard)
        v = t.put(v, bi, v[:, bi] + (beard * t.c(arr["beard_thickness"])[:, None])[..., None]
                  * t.f(self.normals[self.beard_on])[None])
        # skin detail: dark spots (freckles, moles, age spots) and red blemishes
        sw, kinds = t.c(arr["spots"]), self.spot_kinds
        dk, rk = np.flatnonzero(kinds != 2), np.flatnonzero(kinds == 2)
        dark = sw[:, t.i(dk)] @ t.f(self.spots[dk])
        redm = sw[:, t.i(rk)] @ t.f(self.spots[rk]) + t.c(arr["redness"])[:, None] * 0.3
        # one exp for both (exp(x) exp(y) = exp(x + y)): the costliest step on the CPU
        a = a * xp.exp(xp.clip(redm, 0, 1)[..., None] * t.f(np.array([0.25, -0.25, -0.2]))[None, None]
                       - xp.clip(dark, 0, 2)[..., None] * t.f(np.array([0.4, 0.55, 0.7]))[None, None])
        mb = xp.clip(beard, 0, 1)[..., None]
        a = t.put(a, bi, a[:, bi] * (1 - mb) + mb * t.c(arr["beard_color"])[:, None, :])
        # clothing at the neck: a plain or striped band
        ci = t.i(self.band_on)
        cloth = t.c(arr["cloth"])
        stripe_f = t.c(arr["cloth_stripes"])[:, None]
        stripes = 0.5 + 0.5 * xp.sign(xp.sin(stripe_f * t.f(self.band_v[self.band_on])[None] * 3.0))
        stripes = xp.where(stripe_f > 0, stripes, t.f(np.zeros(1)))
        colour = cloth[:, None, 0] * (1 - stripes[..., None]) + cloth[:, None, 1] * stripes[..., None]
        mc = (t.f(self.band[self.band_on])[None] * t.c(arr["cloth_on"])[:, None])[..., None]
        a = t.put(a, ci, a[:, ci] * (1 - mc) + mc * colour)
        # catch-lights
        li = t.i(self.catchlight_on)
        ml = (t.f(self.catchlight[self.catchlight_on])[None] * t.c(arr["catchlight"])[:, None])[..., None]
        a = t.put(a, li, a[:, li] * (1 - ml) + ml * 0.95)
        verts, albs = [v], [xp.clip(a, 0.0, 1.0)]
        # hair shell over the scalp
        if self.shell is not None:
            hp = t.c(arr["hair"])
            th = hair.thickness(self.shell, hp, xp)
            src = t.i(self.shell.src)
            verts.append(v[:, src] + th[..., None] * t.f(self.shell.normals)[None])
            albs.append(hair.albedo(self.shell, hp, t.c(arr["hair_color"]), xp))
        # eyewear, placed by each face's own five points
        g = self._place(v, t.c(arr["glasses"]), t, xp)
        lens = t.f(eyewear.LENS_MASK.astype(np.float32))[None, :, None]
        ga = t.c(arr["glasses_color"])[:, None, :] * (1 - lens) + lens * t.c(arr["lens_color"])[:, None, :]
        verts += [g, g]
        albs += [ga, ga]
        return t.cat(verts), t.cat(albs)

    def specular(self, arr: dict[str, np.ndarray], xp, like=None):
        """Per-vertex specular weights (B, N + n_extra) of the dressed mesh (0 on hair and
        glasses), for the renderers' ``specular``, or None when no image of the batch
        shines. `arr`: the numpy arrays of ``arrays`` (whether any image shines is read
        there, so a device batch reads nothing back); xp numpy or torch, `like` then a
        tensor on the device the weights go to."""
        shine = np.asarray(arr["shine"])
        if not shine.any():
            return None
        t = _Tensors(xp, like)
        return t.cat([t.c(shine) @ t.f(self.shine), t.f(np.zeros((len(shine), self.n_extra)))])

    def _place(self, v, coords, t, xp):
        """Face-frame coordinates (B, G, 3) -> model space on each face (B, G, 3)."""
        p = xp.stack([v[:, t.i(g)].mean(1) for g in self.groups], 1)                  # (B, 5, 3)
        right, left, nose = p[:, 0], p[:, 1], p[:, 2]
        mouth = (p[:, 3] + p[:, 4]) / 2
        origin = (right + left) / 2
        x = left - right
        iod = _norm(x, xp)
        x = x / iod
        y = origin - mouth
        y = y - x * (y * x).sum(-1, keepdims=True)
        y = y / _norm(y, xp)
        z = xp.cross(x, y, axis=-1) if xp is np else xp.cross(x, y, dim=-1)
        z = z * xp.sign(((nose - origin) * z).sum(-1, keepdims=True))
        axes = xp.stack([x, y, z], 1)                                                    # (B, 3, 3)
        return origin[:, None] + (coords * iod[:, None]) @ axes


def _norm(x, xp):
    return xp.sqrt((x * x).sum(-1, keepdims=True))


class _Tensors:
    """Constants and arrays in the meshes' array type and device."""

    def __init__(self, xp, like):
        self.xp, self.like = xp, like

    def f(self, a):
        if self.xp is np:
            return np.asarray(a, np.float32)
        return self.xp.as_tensor(np.asarray(a, np.float32), device=self.like.device)

    def i(self, a):
        if self.xp is np:
            return np.asarray(a, np.int64)
        return self.xp.as_tensor(np.asarray(a, np.int64), device=self.like.device)

    def put(self, x, idx, values):
        """x with x[:, idx] replaced by values (a new array; differentiable for torch)."""
        if self.xp is np:
            x = x.copy()
            x[:, idx] = values
            return x
        return x.index_copy(1, idx, values.to(x.dtype))

    def cat(self, parts):
        """Concatenate along the vertex axis."""
        return np.concatenate(parts, 1) if self.xp is np else self.xp.cat(parts, 1)

    def c(self, a):
        """A batch array: as is for numpy, a tensor on the device for torch."""
        if self.xp is np:
            return np.asarray(a, np.float32)
        return a if isinstance(a, self.xp.Tensor) else self.xp.as_tensor(a, device=self.like.device)


_CACHE: dict[int, Appearance] = {}


def appearance_for(model: MorphableModel) -> Appearance:
    """The (cached, per process) static appearance data of a model."""
    key = id(model)
    if key not in _CACHE:
        _CACHE[key] = Appearance(model)
    return _CACHE[key]
