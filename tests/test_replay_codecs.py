import numpy as np
import pytest

from edge_runtime.inference.preprocess import load_rgb, normalise
from edge_runtime.replay.codecs import CODEC_NAMES, make_codec

# stated error bounds on real trunk features (relative L2, mean cosine)
BOUNDS = {"fp32": (1e-7, 0.999999), "fp16": (1e-3, 0.9999), "uint8_map": (0.02, 0.9998),
          "uint8_channel": (0.01, 0.9999), "pq": (0.3, 0.95), "pca": (0.4, 0.9)}


@pytest.fixture(scope="module")
def real_features(data_root, backbone_files):
    from edge_runtime.dataset import train_images
    from edge_runtime.training.bundle import ModelBundle

    images = train_images(data_root, "transistor", limit=12)
    return ModelBundle(files=backbone_files).features(images), images


def _roundtrip(codec, samples):
    enc = codec.encode(samples)
    return enc, codec.decode(enc.payload, enc.sample_meta, enc.shared_meta, samples.shape[1:])


def _errors(decoded, reference):
    d, r = decoded.reshape(len(decoded), -1), reference.reshape(len(reference), -1)
    cos = np.sum(d * r, 1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(r, axis=1))
    return np.linalg.norm(d - r) / np.linalg.norm(r), cos.mean()


@pytest.mark.parametrize("name", list(BOUNDS))
def test_feature_codecs_roundtrip_within_stated_error(name, real_features):
    features, _ = real_features
    enc, decoded = _roundtrip(make_codec(name), features)
    assert decoded.shape == features.shape and decoded.dtype == np.float32
    rel, cos = _errors(decoded, features)
    max_rel, min_cos = BOUNDS[name]
    assert rel <= max_rel and cos >= min_cos, (name, rel, cos)
    assert enc.payload.shape[0] == len(features)


def test_exact_bytes_per_sample(real_features):
    features, _ = real_features
    n, per = len(features), features[0].size
    assert _roundtrip(make_codec("fp32"), features)[0].payload_bytes == n * per * 4
    assert _roundtrip(make_codec("fp16"), features)[0].payload_bytes == n * per * 2
    enc = _roundtrip(make_codec("uint8_map"), features)[0]
    assert (enc.payload_bytes, enc.metadata_bytes) == (n * per, n * 8)
    enc = _roundtrip(make_codec("uint8_channel"), features)[0]
    assert (enc.payload_bytes, enc.metadata_bytes) == (n * per, n * 24 * 8)
    enc = _roundtrip(make_codec("pq", num_subvectors=6, bits=7), features)[0]
    assert enc.payload_bytes == n * 32 * 32 * 6  # one byte per sub-vector code
    assert enc.metadata_bytes > 6 * 4 * 4 * 4  # codebooks are accounted


def test_per_channel_beats_per_map_quantisation(real_features):
    features, _ = real_features
    per_map = _errors(_roundtrip(make_codec("uint8_map"), features)[1], features)[0]
    per_channel = _errors(_roundtrip(make_codec("uint8_channel"), features)[1], features)[0]
    assert per_channel < per_map


def test_image_codec_is_lossless(real_features):
    _, images = real_features
    rgb = np.stack([load_rgb(p, 256) for p in images[:4]])
    enc, decoded = _roundtrip(make_codec("image"), rgb)
    assert enc.payload_bytes == 4 * 3 * 256 * 256
    np.testing.assert_array_equal(decoded, normalise(rgb))


def test_codec_names_and_bad_parameters():
    assert {make_codec(n).name for n in CODEC_NAMES} == set(CODEC_NAMES)
    with pytest.raises(ValueError, match="unknown replay codec"):
        make_codec("zip")
    with pytest.raises(ValueError):
        make_codec("pq", bits=12)
    with pytest.raises(ValueError):
        make_codec("fp16", bits=3)


def test_pq_kmeans_matches_scikit_learn_without_importing_it():
    """The codec's own k-means (no scikit-learn in the training worker: ~95 MB) reaches
    scikit-learn's inertia on 4-dim pieces like the trunk's."""
    import subprocess
    import sys

    from sklearn.cluster import KMeans

    from edge_runtime.replay.codecs.pq import kmeans, nearest

    rng = np.random.default_rng(0)
    x = (np.abs(rng.standard_normal((20_000, 4))) * rng.random(4)).astype(np.float32)
    centres = kmeans(x, 64)
    ours = float(((x - centres[nearest(x, centres)]) ** 2).sum())
    theirs = KMeans(n_clusters=64, n_init=1, max_iter=30, random_state=0).fit(x).inertia_
    assert ours < 1.03 * theirs, (ours, theirs)
    code = ("import sys, numpy as np; from edge_runtime.replay.codecs import make_codec; "
            "make_codec('pq').encode(np.random.default_rng(0).random((4, 24, 8, 8), "
            "dtype=np.float32)); assert 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
