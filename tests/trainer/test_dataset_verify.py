"""trainer.dataset.verify_shards: a shard that is missing, cut or changed since
preprocessing wrote it is refused before training reads it."""

import json
import logging
import shutil

import pytest

from common import exit_codes
from trainer.dataset import CorruptDataset, load_dataset, verify_shards


@pytest.fixture
def dataset_dir(tiny_dataset, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, copy)
    return copy


def _first_shard(directory):
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory / manifest["splits"]["train"]["shards"][0]["file"]


def test_an_intact_dataset_passes(dataset_dir):
    verify_shards(load_dataset(str(dataset_dir)))


def test_a_changed_byte_is_caught_by_the_checksum(dataset_dir):
    shard = _first_shard(dataset_dir)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptDataset, match=f"{shard}: CRC32C [0-9a-f]{{8}}, the manifest"):
        verify_shards(load_dataset(str(dataset_dir)))


def test_a_cut_shard_is_caught_by_its_size(dataset_dir):
    shard = _first_shard(dataset_dir)
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: size // 2])
    with pytest.raises(CorruptDataset, match=f"{size // 2} bytes, the manifest recorded {size}"):
        verify_shards(load_dataset(str(dataset_dir)))


def test_a_missing_shard_is_named(dataset_dir):
    shard = _first_shard(dataset_dir)
    shard.unlink()
    with pytest.raises(CorruptDataset, match=f"{shard}: train shard listed in the manifest"):
        verify_shards(load_dataset(str(dataset_dir)))


def test_corrupt_dataset_is_bad_input():
    assert issubclass(CorruptDataset, ValueError)
    assert exit_codes.exit_code(CorruptDataset("x")) == exit_codes.BAD_INPUT


def test_an_older_manifest_without_shards_is_not_verified(dataset_dir, caplog):
    path = dataset_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for block in manifest["splits"].values():
        del block["shards"]
    path.write_text(json.dumps(manifest))
    (dataset_dir / manifest["splits"]["train"]["files"][0]).write_bytes(b"not checked")
    with caplog.at_level(logging.WARNING):
        verify_shards(load_dataset(str(dataset_dir)))
    assert "records no shard checksums" in caplog.text and "train" in caplog.text
