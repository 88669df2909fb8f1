"""PhotoPredictor's decoding: a large JPEG is decoded reduced by the DCT to what the face pipeline needs, and its
faces still come back in the photo's own pixels; what the cap leaves out is said."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from facelab.data.decode import _dct_scale, dct_reduction, decode_bytes, jpeg_size
from facelab.deploy import load_engine
from facelab.eval.photos import DECODE_MARGIN, Photo, PhotoPredictor
from facelab.faces.detectors.base import DEFAULT_MAX_SIDE
from tests.fixtures.faces import FACE_SEEDS, face_grid, paste_face
from tests.unit.deploy.test_onnx import save_tiny


def _jpeg(image: np.ndarray, orientation: int | None = None) -> bytes:
    kw = {"quality": 92}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> PhotoPredictor:
    ckpt = save_tiny(tmp_path_factory.mktemp("photos") / "tiny", "vgg_scratch")
    return PhotoPredictor(load_engine(ckpt), faces="detect", detector="retinaface")


def test_the_reduction_keeps_the_longer_side_above_what_detection_needs():
    assert _dct_scale(3000, 4000, None, 1000) == {"min_height": 750, "min_width": 1000}  # 1/4
    assert _dct_scale(3000, 4000, None, 1001) == {"min_height": 1500, "min_width": 2000}  # 1/2
    assert _dct_scale(3000, 4000, None, 2001) == {}  # whole
    assert _dct_scale(3000, 4000, 400, 600) == {"min_height": 750, "min_width": 1000}  # both bounds hold
    assert _dct_scale(3000, 4000, 200, None) == _dct_scale(3000, 4000, 200) == {"min_height": 375, "min_width": 500}


@pytest.mark.parametrize("orientation", [None, 6])
def test_a_reduced_jpeg_knows_its_full_size(orientation):
    stored = np.zeros((480, 640, 3), np.uint8)
    data = _jpeg(stored, orientation)
    full = jpeg_size(data)
    assert full == ((640, 480) if orientation == 6 else (480, 640))  # as shown
    image = decode_bytes(data, min_long_side=160)
    assert image.shape[:2] == (full[0] // 4, full[1] // 4) and dct_reduction(full, image.shape[:2]) == 4
    assert dct_reduction(full, decode_bytes(data).shape[:2]) == 1 and dct_reduction((1, 1), (1, 1)) == 1
    assert dct_reduction(full, (full[0] // 3, full[1] // 3)) == 1  # no DCT scale made it
    assert jpeg_size(cv2.imencode(".png", stored)[1].tobytes()) is None and jpeg_size(b"\xff\xd8\xffjunk") is None


def test_a_big_jpeg_is_decoded_reduced_and_answered_in_its_own_pixels(predictor):
    """A 5400 x 3600 photo (19 Mpx) is decoded at half size (2700 px >= 2 x 1280): a quarter of the memory."""
    pasted = paste_face(FACE_SEEDS[1], canvas=(3600, 5400), scale=10.0, center=(3100.0, 1500.0))
    data = _jpeg(pasted.image)
    photo = predictor.decode_photo(data)
    assert DECODE_MARGIN * DEFAULT_MAX_SIDE == 2560 and photo.reduction == 2
    assert (photo.width, photo.height) == (5400, 3600) and photo.image.shape == (1800, 2700, 3)
    reduced = predictor.predict_image(photo)
    whole = predictor.predict_image(Photo.of(decode_bytes(data)))
    assert (reduced.width, reduced.height) == (whole.width, whole.height) == (5400, 3600)
    assert reduced.faces_found == whole.faces_found == 1
    got, want = np.array(reduced.faces[0].landmarks), np.array(whole.faces[0].landmarks)
    eye = pasted.eye_distance  # about 230 px
    assert np.linalg.norm(got - pasted.landmarks, axis=1).mean() < 0.25 * eye
    assert np.linalg.norm(got - want, axis=1).max() < 0.02 * eye  # the same face, in the same pixels
    x, y, w, h = reduced.faces[0].box
    assert x < pasted.landmarks[:, 0].min() < pasted.landmarks[:, 0].max() < x + w
    assert np.abs(np.array(reduced.faces[0].box) - whole.faces[0].box).max() < 0.03 * w


def test_a_photo_taken_as_one_face_is_decoded_to_what_its_crop_needs(tmp_path):
    ckpt = save_tiny(tmp_path / "tiny", "vgg_scratch")
    predictor = PhotoPredictor(load_engine(ckpt), faces="aligned")
    photo = predictor.decode_photo(_jpeg(np.zeros((1024, 768, 3), np.uint8)))
    assert photo.reduction == 8 and (photo.width, photo.height) == (768, 1024)  # 96 x 128 >= 32 px crop
    assert len(predictor.predict_image(photo).faces) == 1


def test_the_cap_says_how_many_faces_it_left_out(predictor, tmp_path):
    crowd = face_grid(6, 6)
    result = predictor.predict_image(crowd)
    assert len(result.faces) == 32 and result.faces_found == 36
    assert result.note == "36 faces found; the 32 best-scored are kept (max_faces 32)"
    assert predictor.predict_image(crowd, max_faces=5).note == "36 faces found; the 5 best-scored are kept (max_faces 5)"
    path = tmp_path / "crowd.jpg"
    path.write_bytes(_jpeg(crowd))
    faces = predictor.face_crops(predictor.read_photo(path), max_faces=40)
    assert len(faces.crops) == faces.found == 36 and faces.note is None and not faces.capped
