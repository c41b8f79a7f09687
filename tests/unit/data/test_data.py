"""Dataset index, data folder resolution, the patient-level split and the training Dataset."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brainseg.data.dataset import (
    Augment,
    EpochSampler,
    SliceDataset,
    augment,
    contrast_curve,
    flair_alone,
    storage_powers,
    storage_tables,
)
from brainseg.data.index import by_patient, index_dataset, load_split, make_split, resolve_data_dir, save_split, select
from brainseg.errors import BrainsegError
from brainseg.evaluation.encodings import nifti, to_xyz
from brainseg.io import intensity
from brainseg.io.volumes import read_volume
from brainseg.paths import DATA_ENV

ROOT = Path(__file__).resolve().parents[3]
PATIENT = "TCGA_CS_4942_19970222"          # the patient of the byte-exact originals
SAMPLE_PATIENT = "TCGA_HT_7686_19950629"   # shipped in samples/: 20 slices, 10 with tumour


@pytest.fixture(scope="module")
def records(kaggle_dir: Path):
    """The whole index (about 2 s: it reads every mask once)."""
    return index_dataset(kaggle_dir)


@pytest.fixture(scope="module")
def patient_records():
    return index_dataset(ROOT / "samples", patients=[SAMPLE_PATIENT])


# ---- index ----------------------------------------------------------------------------------------

def test_natural_slice_order(patient_records) -> None:
    numbers = [r.number for r in patient_records]
    assert len(numbers) > 10                      # so that 10 would sort before 2 as text
    assert numbers == list(range(1, len(numbers) + 1))
    assert [r.image_path.name for r in patient_records[:3]] == [f"{SAMPLE_PATIENT}_{n}.tif" for n in (1, 2, 3)]


def test_mask_paths_sit_beside_images(patient_records) -> None:
    for record in patient_records:
        assert record.patient == SAMPLE_PATIENT
        assert record.mask_path == record.image_path.with_name(f"{SAMPLE_PATIENT}_{record.number}_mask.tif")
        assert record.mask_path.is_file()


def test_tumour_flags_equal_mask_content(patient_records) -> None:
    for record in patient_records:
        pixels = int(np.count_nonzero(np.asarray(Image.open(record.mask_path))))
        assert record.tumour_pixels == pixels
        assert record.tumour == (pixels > 0)
    assert any(r.tumour for r in patient_records) and not all(r.tumour for r in patient_records)


def test_whole_index_is_sorted_by_patient_then_slice(records, kaggle_dir: Path) -> None:
    patients = sorted(p.name for p in kaggle_dir.iterdir() if p.is_dir())
    grouped = by_patient(records)
    assert list(grouped) == patients
    for rows in grouped.values():
        assert [r.number for r in rows] == sorted(r.number for r in rows)


def test_unknown_patient_is_an_error(kaggle_dir: Path) -> None:
    with pytest.raises(BrainsegError, match="TCGA_XX_0000"):
        index_dataset(kaggle_dir, patients=["TCGA_XX_0000"])


def copy_patient(originals: Path, root: Path, stems: list[str]) -> Path:
    """A tiny kaggle_3m folder built from the byte-exact originals."""
    folder = root / "kaggle_3m" / PATIENT
    folder.mkdir(parents=True)
    for stem in stems:
        shutil.copy(originals / f"{stem}.tif", folder / f"{stem}.tif")
    return folder


def test_index_of_a_small_copied_folder(tmp_path: Path, originals: Path) -> None:
    copy_patient(originals, tmp_path, [f"{PATIENT}_11", f"{PATIENT}_11_mask", f"{PATIENT}_3", f"{PATIENT}_3_mask"])
    found = index_dataset(tmp_path)                  # the parent of kaggle_3m is accepted too
    assert [(r.number, r.tumour_pixels) for r in found] == [(3, 0), (11, 1539)]


def test_image_without_mask_is_an_error(tmp_path: Path, originals: Path) -> None:
    folder = copy_patient(originals, tmp_path, [f"{PATIENT}_11"])
    with pytest.raises(BrainsegError, match=f"{folder / PATIENT}_11.tif.*mask"):
        index_dataset(tmp_path / "kaggle_3m")


def test_badly_named_slice_is_an_error(tmp_path: Path, originals: Path) -> None:
    folder = copy_patient(originals, tmp_path, [])
    shutil.copy(originals / f"{PATIENT}_11.tif", folder / "scan.tif")
    with pytest.raises(BrainsegError, match="scan.tif"):
        index_dataset(tmp_path / "kaggle_3m")


def test_folder_without_slices_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "kaggle_3m" / "empty_patient").mkdir(parents=True)
    with pytest.raises(BrainsegError, match="no slices found"):
        index_dataset(tmp_path / "kaggle_3m")


# ---- where the data folder comes from -----------------------------------------------------------

def test_missing_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_kaggle_3m"
    with pytest.raises(BrainsegError, match=str(missing)) as error:
        resolve_data_dir(missing)
    assert DATA_ENV in str(error.value) and "\n" not in str(error.value)


def test_no_folder_and_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(BrainsegError, match=DATA_ENV):
        resolve_data_dir(None)


def test_environment_variable_is_used(monkeypatch: pytest.MonkeyPatch, kaggle_dir: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(kaggle_dir))
    assert resolve_data_dir(None) == kaggle_dir
    monkeypatch.setenv(DATA_ENV, str(kaggle_dir.parent))   # the folder that holds kaggle_3m
    assert resolve_data_dir(None) == kaggle_dir
    assert resolve_data_dir(kaggle_dir) == kaggle_dir      # an argument wins over the variable


# ---- patient-level split ------------------------------------------------------------------------

def test_split_is_deterministic(records) -> None:
    assert make_split(records, seed=0) == make_split(list(reversed(records)), seed=0)
    assert make_split(records, seed=1) != make_split(records, seed=0)


def test_split_is_patient_level_and_complete(records) -> None:
    split = make_split(records, seed=0)
    parts = [set(split[name]) for name in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == {r.patient for r in records}
    total = len(by_patient(records))
    assert [len(p) for p in parts] == [round(total * f) for f in (0.7, 0.1, 0.2)]


def test_every_part_has_tumour_slices(records) -> None:
    split = make_split(records, seed=0)
    for name, patients in split.items():
        part = select(records, patients)
        assert sum(r.tumour for r in part) > 0, name
        assert sum(not r.tumour for r in part) > 0, name


def test_shipped_split_is_reproduced_from_the_data(records) -> None:
    assert load_split(ROOT / "weights" / "split.json") == make_split(records, seed=0)


def test_split_json_round_trip(records, tmp_path: Path) -> None:
    split = make_split(records, seed=3)
    save_split(split, tmp_path / "split.json", seed=3)
    assert load_split(tmp_path / "split.json") == split


def test_bad_split_files(tmp_path: Path) -> None:
    with pytest.raises(BrainsegError, match="missing.json"):
        load_split(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"train": ["a"], "val": []')
    with pytest.raises(BrainsegError, match="broken.json"):
        load_split(broken)


# ---- training tensors ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def few_records(patient_records):
    """Two tumour slices and one healthy slice of the real patient."""
    tumour = [r for r in patient_records if r.tumour]
    healthy = [r for r in patient_records if not r.tumour]
    return tumour[:2] + healthy[:1]


def test_dataset_shapes_and_labels(few_records) -> None:
    dataset = SliceDataset(few_records)
    assert len(dataset) == 3
    for i, record in enumerate(few_records):
        image, mask, label = dataset[i]
        assert image.shape == (3, 256, 256) and image.dtype == torch.float32
        assert mask.shape == (1, 256, 256) and set(mask.unique().tolist()) <= {0.0, 1.0}
        assert int(mask.sum()) == record.tumour_pixels
        assert label == int(record.tumour)


def test_augmented_crops_have_the_crop_size(few_records) -> None:
    dataset = SliceDataset(few_records, Augment(crop=160), seed=0)
    image, mask, _ = dataset[0]
    assert image.shape == (3, 160, 160) and mask.shape == (1, 160, 160)


def test_augmentation_is_reproducible_per_epoch(few_records) -> None:
    dataset = SliceDataset(few_records, Augment(crop=160), seed=0)
    first, again = dataset[0], dataset[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], first[0])


def test_flips_move_image_and_mask_together(few_records) -> None:
    dataset = SliceDataset(few_records[:1], Augment(affine_p=0.0, intensity=0.0), seed=0)
    plain = SliceDataset(few_records[:1])
    image, mask, _ = plain[0]
    flips = {(): lambda t: t, (-1,): lambda t: t.flip(-1), (-2,): lambda t: t.flip(-2),
             (-2, -1): lambda t: t.flip(-2).flip(-1)}
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        augmented_image, augmented_mask, _ = dataset[0]
        matches = [key for key, flip in flips.items() if torch.equal(flip(image), augmented_image)]
        assert len(matches) == 1
        assert torch.equal(flips[matches[0]](mask), augmented_mask)
        seen.add(matches[0])
    assert len(seen) >= 3


def test_contrast_curves_bend_each_channel_monotonically_and_keep_the_ends(few_records) -> None:
    image_u8 = SliceDataset(few_records[:1]).images_u8[0]
    assert contrast_curve(image_u8, random.Random(0), Augment()) is image_u8            # gamma 1: no curve
    curved = [contrast_curve(image_u8, random.Random(seed), Augment(gamma=1.5, gamma_p=1.0)) for seed in range(4)]
    levels = np.arange(256, dtype=np.uint8)[:, None, None].repeat(3, axis=2)       # every level in every channel
    for seed in range(4):
        table = contrast_curve(levels, random.Random(seed), Augment(gamma=1.5, gamma_p=1.0))[:, 0]
        assert (np.diff(table.astype(int), axis=0) >= 0).all()                       # order kept
        assert (table[0] == 0).all() and (table[-1] == 255).all()
        assert len({tuple(table[:, c]) for c in range(3)}) == 3                      # one curve per channel
        assert 0.4 < table[128].max() / 128 * table[128].min() / 128 < 2.5          # within 1.5^+-1 at mid-grey
    assert not np.array_equal(curved[0], image_u8) and not np.array_equal(curved[0], curved[1])


def test_flair_alone_copies_the_flair_channel_as_a_flair_only_upload(few_records) -> None:
    image_u8 = SliceDataset(few_records[:1]).images_u8[0]
    assert flair_alone(image_u8, random.Random(0), Augment()) is image_u8
    copied = flair_alone(image_u8, random.Random(0), Augment(flair_alone=1.0))
    assert all(np.array_equal(copied[..., c], image_u8[..., 1]) for c in range(3))
    shares = [flair_alone(image_u8, random.Random(seed), Augment(flair_alone=0.25)) is not image_u8
              for seed in range(200)]
    assert 30 <= sum(shares) <= 70


def test_a_curve_reaches_the_training_items_before_preprocessing(few_records) -> None:
    plain = SliceDataset(few_records[:1], Augment(affine_p=0.0, intensity=0.0), seed=0)
    curved = SliceDataset(few_records[:1], Augment(affine_p=0.0, intensity=0.0, gamma=1.5, gamma_p=1.0), seed=0)
    (image, mask, _), (curved_image, curved_mask, _) = plain[0], curved[0]
    flips = (lambda t: t, lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.flip(-2).flip(-1))
    assert not any(torch.allclose(flip(image), curved_image, atol=1e-3) for flip in flips)
    assert any(torch.equal(flip(mask), curved_mask) for flip in flips)              # the mask is not curved


def test_storage_powers_put_linear_storage_first_and_spread_curves_over_the_range() -> None:
    assert storage_powers(1.0) == (1.0,)
    powers = storage_powers(1.5)
    assert powers[0] == 1.0 and 1.0 not in powers[1:] and len(powers) == 9
    assert min(powers) == pytest.approx(1 / 1.5) and max(powers) == pytest.approx(1.5)


def test_storage_tables_give_what_the_app_reads_back_from_that_storage(patient_records) -> None:
    """The tables simulate the reader: the same volume written as int16, float through a curve and 4D int16 and
    read back by :func:`read_volume` gives the tables' values (a float32 curve rounds a level at most)."""
    volume = SliceDataset(patient_records).images_u8
    landmarks = intensity.load()
    tables = storage_tables(volume, landmarks.volume, (1.0, 0.8), landmarks.head_percentiles)
    flair = volume[..., intensity.FLAIR]
    linear = read_volume([("flair.nii.gz", nifti(to_xyz(flair.astype(np.int16) * 16 + 100)))]).images_u8
    assert np.array_equal(np.stack(linear)[..., 0], tables[0, intensity.FLAIR][flair])
    curve = (4000 * (flair / 255.0) ** 0.8).astype(np.float32)
    curved = np.stack(read_volume([("flair.nii.gz", nifti(to_xyz(curve)))]).images_u8)[..., 0].astype(int)
    difference = np.abs(curved - tables[1, intensity.FLAIR][flair])
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99
    assert not np.array_equal(tables[1, intensity.FLAIR], tables[0, intensity.FLAIR])
    four_d = np.stack(read_volume([("scan.nii.gz", nifti(to_xyz(volume.astype(np.int16) * 16)))]).images_u8)
    for channel in range(3):
        assert np.array_equal(four_d[..., channel], tables[0, channel][volume[..., channel]])


def test_storage_views_need_the_landmarks(few_records) -> None:
    with pytest.raises(ValueError, match="landmarks"):
        SliceDataset(few_records, Augment(stored_as=0.5))


def test_paired_items_show_the_slice_as_stored_beside_its_view(few_records) -> None:
    """With ``paired``, channels 3-5 are the slice as stored, flipped like the view and never jittered."""
    landmarks = intensity.load()
    plain = SliceDataset(few_records[:1])[0][0]
    flips = (lambda t: t, lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.flip(-2).flip(-1))
    paired = SliceDataset(few_records[:1], Augment(affine_p=0.0, intensity=0.2, stored_as=1.0, gamma=1.5),
                          seed=0, paired=True, landmarks=landmarks)
    for epoch in range(4):
        paired.set_epoch(epoch)
        image, mask, _ = paired[0]
        assert image.shape == (6, 256, 256)
        matches = [flip for flip in flips if torch.equal(flip(plain), image[3:])]
        assert len(matches) == 1
        assert not torch.allclose(image[:3], image[3:], atol=1e-2)                  # the view is another picture
    alone = SliceDataset(few_records[:1], Augment(affine_p=0.0, intensity=0.0, flair_alone=1.0, stored_as=1.0),
                         seed=0, paired=True, landmarks=landmarks)
    image = alone[0][0]
    assert torch.equal(image[3], image[4]) and torch.equal(image[4], image[5])     # the stored FLAIR alone, too
    assert torch.equal(image[0], image[1])


def test_affine_crop_and_jitter_keep_image_and_mask_aligned(few_records) -> None:
    """Paint the mask into one channel: after any augmentation that channel must still match the mask."""
    dataset = SliceDataset(few_records[:1])
    image, mask, _ = dataset[0]
    image = image.clone()
    image[0] = mask[0] * 5.0                           # background 0, tumour 5
    aug = Augment(crop=128, affine_p=1.0, rotate_degrees=15.0, scale=0.1, intensity=0.1)
    checked = 0
    for seed in range(12):
        warped, warped_mask = augment(image, mask, random.Random(seed), aug)
        painted = warped[0] > warped[0].min() + 2.5
        truth = warped_mask[0] > 0.5
        if truth.sum() < 20:                           # a crop that missed the tumour
            continue
        dice = 2 * (painted & truth).sum() / (painted.sum() + truth.sum())
        assert dice > 0.9, seed
        checked += 1
    assert checked >= 6


def test_epoch_sampler_shards_and_balances() -> None:
    labels = [1] * 10 + [0] * 30
    shards = [list(EpochSampler(labels, 0.5, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 7          # 10 tumour + 5 healthy, cut to a multiple of 2
    assert not set(shards[0]) & set(shards[1])
    chosen = shards[0] + shards[1]
    assert sum(labels[i] for i in chosen) >= 9
    everything = EpochSampler(labels, None, seed=0)
    assert sorted(everything) == list(range(40))
