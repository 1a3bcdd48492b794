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
detail (freckles, moles, blemishes, age spots, wrinkles of an age-like depth, a fine
texture), shiny skin or being a glasses wearer (who wears them in 3 of 4 images; anyone
may wear sunglasses now and then); of an image showing a collar, and catch-lights with
lashes (darkened lid margins). Facial hair follows the face's size as a tendency
(:func:`beard_probability`; size is a gender-like cue of the shape that needs no labels).
``hair_vary`` is the probability that an image re-draws its identity's hairstyle. What
each image got is recorded in its params (``appearance``); it is a pure function of
(seed, identity, sample).

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

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from ..model import MorphableModel
from ..probspec import Categorical, parse_probabilities, to_spec
from . import eyewear, hair
from .frame import (beard_fields, catchlight_field, clothing_band, face_frame, five_points, lash_field, mesh_smoother,
                    pore_fields, region, shine_fields, spot_fields, vertex_normals, wrinkle_field)

PARTS = ("hair", "eyewear", "beard", "skin", "clothing", "eyes", "shine", "hair_vary")
PRESETS = {"off": {}, "full": {"hair": 0.92, "eyewear": 0.25, "beard": 0.3, "skin": 0.7, "clothing": 0.9,
                               "eyes": 0.9}}
BEARD_STYLES = {"stubble": (0.5, 0.6, 0.7, 0.5, 0.4), "moustache": (1, 0, 0, 0, 0), "goatee": (1, 1, 0, 0, 0),
                "chin_strap": (0, 0.8, 1, 0, 1), "full": (1, 1, 1, 0.8, 1)}
_BEARD_DRAW = Categorical((0.4, 0.15, 0.15, 0.1, 0.2))
SPOT_KINDS = 4
PORE_PATTERNS = 8
PORE_CHANNELS = np.array([0.8, 1.0, 1.1], np.float32)   # darker grain leans brown, as melanin does
WRINKLE_DEPTH = 0.4   # how much a crease darkens the albedo at full wrinkle depth
SHINE_CHEEKS = 0.6   # how much the cheeks shine, relative to the T-zone, at a T-zone share of 0
_FIELD_SEED = 0x61707072
_IDENTITY_ALBEDO = ("spots", "redness", "pores", "wrinkles", "beard", "beard_color")   # Appearance.arrays keys


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

    @staticmethod
    def identity_draws(identity_rng: np.random.Generator, face_size: float = 0.0) -> IdentityLook:
        """The identity-level draws (hairstyle, beard, skin, glasses, shine), the same for
        all of an identity's images: the sampler draws them once per identity and hands
        them to :meth:`sample` for each image. face_size: the identity's score along
        :func:`.frame.size_direction` (about N(0, 1)), which beards follow as a tendency."""
        ir = identity_rng
        u = ir.random(4)
        style, beard, skin, glasses = hair.sample_style(ir), _beard(ir), _skin(ir), eyewear.sample_style(ir)
        has_shine, shine = ir.random(), _shine(ir)   # after the others: older records keep their draws
        skin = dict(skin, wrinkles=_wrinkles(ir), pores=_pores(ir))
        return IdentityLook(u, style, beard, skin, glasses, has_shine, shine, float(face_size))

    def sample(self, identity: IdentityLook, image_rng: np.random.Generator) -> dict:
        """One image's appearance (JSON-able) from its identity's draws
        (:meth:`identity_draws`) and `image_rng`; every draw happens whether used or not,
        so one probability never shifts another part's draws. The identity's dicts are
        shared by its images: read them, never change them."""
        p = dict(self.probs)
        mr = image_rng
        out: dict = {}
        u, style, beard, skin, glasses, has_shine, shine, face_size = identity
        # image
        v = mr.random(5)
        # the image's alternatives: drawn always (the stream stays in step), built when used
        redrawn, spare_glasses, cloth = hair.draw_style(mr), eyewear.draw_style(mr), _clothing(mr)
        if "hair" in p:
            out["hair"] = ((hair.style_from(redrawn) if v[0] < p.get("hair_vary", 0.0) else style)
                           if u[0] < p["hair"] else None)
        if "beard" in p:
            out["beard"] = beard if u[1] < beard_probability(p["beard"], face_size) else None
        if "skin" in p:
            out["skin"] = skin if u[2] < p["skin"] else None
        if "eyewear" in p:
            wearer = u[3] < p["eyewear"]
            if wearer and v[1] < 0.75:
                out["eyewear"] = glasses
            elif v[2] < 0.03:
                out["eyewear"] = dict(eyewear.style_from(spare_glasses), sun=True)
            else:
                out["eyewear"] = None
        if "clothing" in p:
            out["clothing"] = cloth if v[3] < p["clothing"] else None
        if "eyes" in p:
            out["eyes"] = ({"catchlight": round(float(0.5 + 0.5 * mr.random()), 3),
                            "lashes": round(float(0.4 + 0.45 * mr.random()), 3)} if v[4] < p["eyes"] else None)
        if "shine" in p:
            out["shine"] = shine if has_shine < p["shine"] else None
        return out


class IdentityLook(NamedTuple):
    """An identity's appearance draws (:meth:`AppearanceConfig.identity_draws`)."""
    u: np.ndarray          # 4 uniforms: has hair, beard, skin detail, is a glasses wearer
    hair: dict
    beard: dict
    skin: dict
    glasses: dict
    has_shine: float
    shine: dict
    face_size: float       # the gender-like score beards follow (frame.size_direction)


def beard_probability(p: float, face_size: float) -> float:
    """The chance of a beard for an identity of `face_size` (about N(0, 1)) when the option
    asks for `p`: the log-odds shift by 0.8 per unit, so a face one deviation larger is
    about twice as likely bearded (p 0.3: 0.49 against 0.16 one deviation smaller) --
    a tendency, as between men and women, not a rule; 0 and 1 stay 0 and 1."""
    if p <= 0.0 or p >= 1.0:
        return p
    z = min(max(float(face_size), -3.0), 3.0)     # scalars: math, not numpy (a thirtieth of an image's draws)
    return 1.0 / (1.0 + math.exp(-(math.log(p / (1.0 - p)) + 0.8 * z)))


def _beard(rng: np.random.Generator) -> dict:
    style = list(BEARD_STYLES)[_BEARD_DRAW.draw(rng)]
    density = rng.uniform(0.25, 0.6) if style == "stubble" else rng.uniform(0.6, 0.95)
    shade = np.array(hair.COLORS[list(hair.COLORS)[hair.COLOR_DRAW.draw(rng)]])
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


def _wrinkles(rng: np.random.Generator) -> float:
    """An identity's wrinkle depth (0 to 1) from an age-like draw: none for the youngest
    35 %, then growing linearly. Neither the embedded model nor BFM's files carry an age
    direction of the shape, so this is a draw of its own (recorded in ``skin``)."""
    return round(float(np.clip((rng.random() - 0.35) / 0.65, 0.0, 1.0)), 3)


def _pores(rng: np.random.Generator) -> list:
    """An identity's fine skin texture: [pattern, strength] (strength 0.02 to 0.06, the
    standard deviation of the log albedo it adds)."""
    return [int(rng.integers(PORE_PATTERNS)), round(float(rng.uniform(0.02, 0.06)), 3)]


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

    def __init__(self, model: MorphableModel, full: MorphableModel | None = None, keep: np.ndarray | None = None):
        """Appearance for ``model``. A decimated model (:mod:`morphgen.lod`) passes the
        ``full`` one and the ids of the vertices it ``keep``s: the per-vertex fields (spots,
        texture, beard, wrinkles...) are drawn on the full mesh and read at the kept
        vertices, so an identity's moles and freckles sit where they sit at any level of
        detail; the hair shell is built on the mesh as rendered."""
        self.model = model
        mean = model.mean_vertices()
        self.n = len(mean)
        self.groups = [np.atleast_1d(np.asarray(g, np.int64)) for g in model.five_point_vertices()]
        fr = face_frame(five_points(model, mean))
        c = fr.coords(mean)
        normals = vertex_normals(mean, model.triangles)
        src = model if keep is None else full            # the mesh the fields are drawn on
        at = slice(None) if keep is None else keep
        src_mean = mean if keep is None else full.mean_vertices()
        src_c = c if keep is None else fr.coords(src_mean)   # the five points are kept: the same frame
        src_normals = normals if keep is None else vertex_normals(src_mean, full.triangles)
        smooth = mesh_smoother(src.triangles, len(src_mean))
        skin = region(src, "skin")
        skin = np.ones(len(src_mean), bool) if skin is None else skin
        self.normals = src_normals[at].astype(np.float32)
        self.beard = beard_fields(src, src_c, src_normals @ fr.axes.T, smooth)[:, at]       # (5, N)
        self.band = clothing_band(src, src_c, smooth)[at]                                   # (N,)
        self.band_v = c[:, 1].astype(np.float32)
        spots, kinds = spot_fields(src, src_mean, src_c, skin, np.random.default_rng(_FIELD_SEED))  # (K, N), (K,)
        # the fine texture's patterns are normalised over the full mesh's spot zone, then read
        # at the kept vertices like every field
        src_on = np.flatnonzero(np.abs(spots).sum(0) > 0)
        pores = np.zeros((PORE_PATTERNS, len(src_mean)), np.float32)
        pores[:, src_on] = pore_fields(src_on, len(src_mean), smooth, np.random.default_rng(_FIELD_SEED + 1),
                                       PORE_PATTERNS)
        spots, pores = spots[:, at], pores[:, at]
        self.n_spots = len(spots)
        self.catchlight = catchlight_field(src, src_mean, src_c)[at]                        # (N,)
        self.lashes = lash_field(src, src_c)[at]                                            # (N,)
        self.shine = shine_fields(src, src_c, smooth)[:, at]                                # (2, N)
        self.wrinkles = wrinkle_field(src, src_c, smooth)[at]                               # (N,)
        # the vertices each layer can touch: dressing blends only these (a quarter of the
        # face for beards, a tenth for catch-lights, the neck for the band, half for spots)
        self.beard_on = np.flatnonzero(np.abs(self.beard).sum(0) > 0)
        self.band_on = np.flatnonzero(self.band > 0)
        self.catchlight_on = np.flatnonzero(self.catchlight > 0)
        self.lashes_on = np.flatnonzero(self.lashes > 0.02)
        self.wrinkles_on = np.flatnonzero(self.wrinkles > 0.01)
        self.spot_on = np.flatnonzero(np.abs(spots).sum(0) > 0)
        dark, red = kinds != 2, kinds == 2
        self.spot_dark, self.spot_red = np.flatnonzero(dark), np.flatnonzero(red)
        self.spots_dark_on = np.ascontiguousarray(spots[dark][:, self.spot_on], np.float32)   # (Kd, n_spot)
        self.spots_red_on = np.ascontiguousarray(spots[red][:, self.spot_on], np.float32)     # (Kr, n_spot)
        self.pores_on = np.ascontiguousarray(pores[:, self.spot_on])                      # (P, n_spot)
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
        sw = np.zeros((b, self.n_spots), np.float32)
        red = np.zeros(b, np.float32)
        wr = np.zeros(b, np.float32)
        po = np.zeros((b, PORE_PATTERNS), np.float32)
        gl = np.zeros((b, eyewear.N_VERTICES, 3), np.float32)
        gc = np.zeros((b, 3), np.float32)
        lc = np.zeros((b, 3), np.float32)
        cc = np.zeros((b, 2, 3), np.float32)
        cs = np.zeros(b, np.float32)
        con = np.zeros(b, np.float32)
        cl = np.zeros(b, np.float32)
        la = np.zeros(b, np.float32)
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
                wr[i] = a["skin"].get("wrinkles", 0.0)   # older records: none
                if "pores" in a["skin"]:
                    k, strength = a["skin"]["pores"]
                    po[i, int(k)] = strength
            g = a.get("eyewear")
            gl[i] = eyewear.frame_coords(g)
            if g:
                gc[i], lc[i] = g["frame_color"], g["lens_color"]
            if a.get("clothing"):
                cc[i] = [a["clothing"]["color"], a["clothing"]["color2"]]
                cs[i], con[i] = a["clothing"]["stripes"], 1.0
            if a.get("eyes"):
                cl[i], la[i] = a["eyes"]["catchlight"], a["eyes"].get("lashes", 0.0)   # older records: none
            if a.get("shine"):   # the weights of shine_fields' face and T-zone fields
                cheeks = SHINE_CHEEKS * (1.0 - a["shine"]["tzone"])
                sn[i] = np.array([cheeks, 1.0 - cheeks]) * a["shine"]["strength"]
        return {"hair": hp, "hair_color": hc, "beard": bw, "beard_color": bc, "beard_thickness": bt, "spots": sw,
                "redness": red, "wrinkles": wr, "pores": po, "glasses": gl, "glasses_color": gc, "lens_color": lc,
                "cloth": cc, "cloth_stripes": cs, "cloth_on": con, "catchlight": cl, "lashes": la, "shine": sn}

    def apply(self, vertices, albedo, arr: dict, xp):
        """(vertices, albedo) of the model's mesh, (B, N, 3) each, dressed: (B, N + n_extra, 3)
        each, in the order of ``triangles``. xp is numpy or torch (then `arr` holds tensors
        on the meshes' device).

        With numpy, what follows from the identity alone (the albedo's skin detail,
        wrinkles and beard colour; the hair) is computed once per distinct identity in the
        batch (a batch holds a few identities, one after another), and the layers are
        written into the output arrays in place: the same float32 operations on the same
        numbers, so the same pixels, at a third of the cost."""
        t = _Tensors(xp, vertices)
        out_v, v = t.extend(vertices, self.n + self.n_extra)   # v: the model's vertices, owned
        # facial hair: a slight volume for full beards (on the vertices a beard can cover),
        # per image, as the vertices carry each image's expression
        bi = t.i(self.beard_on)
        rows = t.rows(arr["beard"].any(1))                          # the images with a beard
        beard = t.c(arr["beard"])[rows] @ t.f(self.beard[:, self.beard_on])          # (b, n_beard)
        v = t.put(v, bi, v[rows][:, bi] + (beard * t.c(arr["beard_thickness"])[rows][:, None])[..., None]
                  * t.f(self.normals[self.beard_on])[None], rows, owned=True)
        # the albedo layers of the identity, then every image's own copy of its identity's
        one, inv = t.distinct(t.row_ids(albedo), *(arr[k] for k in _IDENTITY_ALBEDO))
        a = self._identity_albedo(albedo[one], {k: t.c(arr[k])[one] for k in _IDENTITY_ALBEDO}, t, xp)
        out_a, a = t.extend(a, self.n + self.n_extra, inv)
        # clothing at the neck: a plain or striped band
        ci = t.i(self.band_on)
        cloth = t.c(arr["cloth"])
        stripe_f = t.c(arr["cloth_stripes"])[:, None]
        stripes = 0.5 + 0.5 * xp.sign(xp.sin(stripe_f * t.f(self.band_v[self.band_on])[None] * 3.0))
        stripes = xp.where(stripe_f > 0, stripes, t.f(np.zeros(1)))
        colour = cloth[:, None, 0] * (1 - stripes[..., None]) + cloth[:, None, 1] * stripes[..., None]
        mc = (t.f(self.band[self.band_on])[None] * t.c(arr["cloth_on"])[:, None])[..., None]
        a = t.put(a, ci, a[:, ci] * (1 - mc) + mc * colour, owned=True)
        # lashes (darkened lid margins), then catch-lights
        ei = t.i(self.lashes_on)
        me = (t.f(self.lashes[self.lashes_on])[None] * t.c(arr["lashes"])[:, None])[..., None]
        a = t.put(a, ei, a[:, ei] * (1 - me), owned=True)
        li = t.i(self.catchlight_on)
        ml = (t.f(self.catchlight[self.catchlight_on])[None] * t.c(arr["catchlight"])[:, None])[..., None]
        a = t.put(a, li, a[:, li] * (1 - ml) + ml * 0.95, owned=True)
        verts, albs = [v], [t.clip01(a)]
        # hair shell over the scalp, once per distinct style and colour
        if self.shell is not None:
            one, inv = t.distinct(t.c(arr["hair"]), t.c(arr["hair_color"]))
            hp = t.c(arr["hair"])[one]
            th = t.expand(hair.thickness(self.shell, hp, xp), inv)
            src = t.i(self.shell.src)
            verts.append(t.offset_rows(v, src, th[..., None] * t.f(self.shell.normals)[None], out_v, self.n))
            albs.append(t.expand(hair.albedo(self.shell, hp, t.c(arr["hair_color"])[one], xp), inv))
        # eyewear, placed by each face's own five points
        g = self._place(v, t.c(arr["glasses"]), t, xp)
        lens = t.f(eyewear.LENS_MASK.astype(np.float32))[None, :, None]
        ga = t.c(arr["glasses_color"])[:, None, :] * (1 - lens) + lens * t.c(arr["lens_color"])[:, None, :]
        verts += [g, g]
        albs += [ga, ga]
        return t.cat(verts, out_v), t.cat(albs, out_a)

    def _identity_albedo(self, a, arr: dict, t, xp):
        """The albedo layers that follow from the identity alone, on (b, N, 3) albedos `a`
        (numpy: the caller's copy, changed in place) with their rows of `arr`: skin detail,
        wrinkles, the beard's colour."""
        # skin detail: dark spots (freckles, moles, age spots) and red blemishes where the
        # spot patterns reach (half of the vertices), with the fine texture, the overall
        # redness everywhere; one exp for all (exp(x) exp(y) = exp(x + y))
        rs = t.rows(arr["spots"].any(1) | (arr["redness"] > 0) | arr["pores"].any(1))   # with skin detail
        sw, si = arr["spots"][rs], t.i(self.spot_on)
        red = arr["redness"][rs][:, None] * 0.3
        dark = sw[:, t.i(self.spot_dark)] @ t.f(self.spots_dark_on)
        redm = sw[:, t.i(self.spot_red)] @ t.f(self.spots_red_on) + red
        grain = arr["pores"][rs] @ t.f(self.pores_on)                               # fine texture, log albedo
        rc, dc = np.array([0.25, -0.25, -0.2], np.float32), np.array([0.4, 0.55, 0.7], np.float32)
        skin = a[rs]
        spots = skin[:, si] * xp.exp(t.channels(xp.clip(redm, 0, 1), rc, xp.clip(dark, 0, 2), dc, grain, PORE_CHANNELS))
        skin = t.put(t.scale_channels(skin, xp.exp(xp.clip(red, 0, 1)[..., None] * t.f(rc))), si, spots, owned=True)
        a = t.put_rows(a, rs, skin)
        # wrinkles: the creases of an older face, as shading
        wi, rw = t.i(self.wrinkles_on), t.rows(arr["wrinkles"] > 0)
        mw = (arr["wrinkles"][rw][:, None] * t.f(self.wrinkles[self.wrinkles_on] * WRINKLE_DEPTH)[None])[..., None]
        a = t.put(a, wi, a[rw][:, wi] * (1 - mw), rw, owned=True)
        # the beard's colour where it grows
        bi, rb = t.i(self.beard_on), t.rows(arr["beard"].any(1))
        mb = xp.clip(arr["beard"][rb] @ t.f(self.beard[:, self.beard_on]), 0, 1)[..., None]
        return t.put(a, bi, a[rb][:, bi] * (1 - mb) + mb * arr["beard_color"][rb][:, None, :], rb, owned=True)

    def hidden_triangles(self, arr: dict[str, np.ndarray]) -> np.ndarray:
        """(B, T) bools over ``triangles``: those no pixel of an image shows -- the hair
        shell's that lie wholly at the hidden depth under the scalp (three quarters of the
        shell for the average style, all of it for a bald head) and the glasses' where the
        image has none. The CPU renderer skips rasterizing them (``render_batch``'s
        ``hidden_triangles``): they were most of the hair's raster time."""
        b, nm = len(arr["hair"]), len(self.model.triangles)
        out = np.zeros((b, len(self.triangles)), bool)
        g0 = nm
        if self.shell is not None:
            st = self.shell.triangles
            one, inv = _Tensors(np, None).distinct(np.asarray(arr["hair"], np.float32))
            hidden = hair.thickness(self.shell, np.asarray(arr["hair"], np.float32)[one], np) <= hair.HIDDEN_MM
            out[:, nm:nm + len(st)] = hidden[:, st].all(-1)[inv]                                # (B, Ts)
            g0 += len(st)
        out[(np.asarray(arr["glasses"]) == eyewear.HIDDEN).all((1, 2)), g0:] = True
        return out

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

    def rows(self, mask):
        """The images a layer changes: those of ``mask`` (B,) with numpy, where skipping the
        rest saves work; every image with torch, where a mask would cost a device sync and
        the layer leaves the other images as they are anyway."""
        return np.flatnonzero(np.asarray(mask)) if self.xp is np else slice(None)

    def put(self, x, idx, values, rows=slice(None), owned: bool = False):
        """x with x[rows][:, idx] replaced by values: a new array (differentiable for torch),
        or with numpy, when the caller `owned` x (a temporary of its own), x itself."""
        if self.xp is np:
            x = x if owned else x.copy()
            x[np.ix_(rows, idx) if isinstance(rows, np.ndarray) else (rows, idx)] = values
            return x
        return x.index_copy(1, idx, values.to(x.dtype))

    def channels(self, r, rc, d, dc, g, gc):
        """``r x rc - d x dc + g x gc``: (..., 3) from per-vertex weights (...) and
        per-channel factors (3,). numpy broadcasts a trailing axis of 3 element by element
        (2.7 ms for a batch's skin spots), so it writes one channel at a time instead
        (0.3 ms), with the same float32 operations."""
        if self.xp is np:
            out = np.empty(r.shape + (3,), np.float32)
            for k in range(3):
                np.subtract(r * rc[k], d * dc[k], out=out[..., k])
                out[..., k] += g * gc[k]
            return out
        return r[..., None] * self.f(rc) - d[..., None] * self.f(dc) + g[..., None] * self.f(gc)

    def scale_channels(self, x, f):
        """x (B, N, 3), a temporary of the caller's, times per-image channel factors f (B, 1, 3):
        numpy in place, a channel at a time (the broadcast product runs 3 elements a loop)."""
        if self.xp is np:
            for k in range(3):
                x[..., k] *= f[..., k]
            return x
        return x * f

    def put_rows(self, x, rows, values):
        """x with the images ``rows`` (of :meth:`rows`) replaced by values: with numpy x
        itself (the caller owns it), with torch a new tensor."""
        if self.xp is np:
            x[rows] = values
            return x
        return values

    def extend(self, x, total: int, inv=None):
        """(out, owned): with numpy a new (B, total, 3) array holding x (or x[inv], see
        :meth:`distinct`) in its first vertices, and the view of them the layers then
        change in place (:meth:`cat` fills the rest); with torch (None, x), the layers
        making new tensors."""
        if self.xp is np:
            rows = x if inv is None else x[inv]
            out = np.empty((rows.shape[0], total, 3), x.dtype)
            out[:, :x.shape[1]] = rows
            return out, out[:, :x.shape[1]]
        return None, x

    def distinct(self, *cols):
        """(one, inv) over batch rows of the arrays `cols`: with numpy the first row of each
        distinct value and, per row, which of those it equals (x[one][inv] == x); with
        torch (every row, None), where finding them would cost a device sync."""
        if self.xp is not np:
            return slice(None), None
        n = len(cols[0])
        key = np.concatenate([np.ascontiguousarray(c).reshape(n, -1).view(np.uint8) for c in cols], 1)
        seen: dict[bytes, int] = {}
        one, inv = [], np.empty(n, np.int64)
        for i in range(n):
            inv[i] = j = seen.setdefault(key[i].tobytes(), len(one))
            if j == len(one):
                one.append(i)
        return np.array(one, np.int64), inv

    def row_ids(self, x):
        """(B,) ints, equal for runs of rows of x (B, ...) that are equal element for
        element (numpy; None for torch): a batch's images come identity after identity, so
        comparing each row with the one before finds the repeats."""
        if self.xp is not np or len(x) == 0:
            return None if self.xp is not np else np.zeros(0, np.int64)
        flat = x.reshape(len(x), -1)
        return np.concatenate([[0], np.cumsum(~(flat[1:] == flat[:-1]).all(1))]).astype(np.int64)

    def offset_rows(self, v, idx, d, out=None, at: int = 0):
        """v[:, idx] + d; with numpy written into out[:, at:at + len(idx)] (of :meth:`extend`,
        whose :meth:`cat` then leaves it in place)."""
        if self.xp is not np:
            return v[:, idx] + d
        dst = out[:, at:at + len(idx)]
        np.add(np.take(v, idx, axis=1), d, out=dst)
        return dst

    @staticmethod
    def expand(x, inv):
        """Per-distinct-row values back to every row (:meth:`distinct`)."""
        return x if inv is None else x[inv]

    def clip01(self, x):
        """x clipped to [0, 1]: numpy in place (x is the caller's), torch a new tensor."""
        return np.clip(x, 0.0, 1.0, out=x) if self.xp is np else self.xp.clip(x, 0.0, 1.0)

    def cat(self, parts, out=None):
        """Concatenate along the vertex axis; with numpy into `out` of :meth:`extend`, whose
        first part already holds parts[0] (and any other part that is a view of it, its own
        place)."""
        if self.xp is not np:
            return self.xp.cat(parts, 1)
        if out is None:
            return np.concatenate(parts, 1)
        k = parts[0].shape[1]
        for p in parts[1:]:
            if p.base is not out:   # else written in place already (offset_rows)
                out[:, k:k + p.shape[1]] = p
            k += p.shape[1]
        return out

    def c(self, a):
        """A batch array: as is for numpy, a tensor on the device for torch."""
        if self.xp is np:
            return np.asarray(a, np.float32)
        return a if isinstance(a, self.xp.Tensor) else self.xp.as_tensor(a, device=self.like.device)


_CACHE: dict[int, Appearance] = {}
_CACHE_SIZE = 4


def appearance_for(model: MorphableModel, full: MorphableModel | None = None,
                   keep: np.ndarray | None = None) -> Appearance:
    """The (cached, per process) static appearance data of a model; a decimated one passes
    its full model and kept vertex ids (:class:`Appearance`).

    Keyed by the model object, the cache holds the last few: each Scene of a decimated
    model makes a new model object, and an unbounded cache kept every one of them, with
    its appearance fields (tens of MB for a Basel mesh), alive for the life of the process
    (a notebook, an experiment's many scenes). An entry holds its model, so its id cannot
    be reused by another while it is cached."""
    hit = _CACHE.get(id(model))
    if hit is None or hit.model is not model:
        hit = Appearance(model, full, keep)
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[id(model)] = hit
    return hit
