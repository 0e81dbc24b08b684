import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from vqaudio.data import demo
from vqaudio.data.corpus import heldout_split, prepare_corpus
from vqaudio.data.sources import list_folder, list_vctk, read_speaker_info
from vqaudio.errors import VQAudioError
from vqaudio.recipe import DataConfig


def dominant_pitch(audio: np.ndarray, rate: int) -> float:
    """Median autocorrelation pitch over voiced 40 ms frames."""
    pitches = []
    for start in range(0, audio.size - 640, 320):
        frame = audio[start : start + 640]
        if np.sqrt((frame**2).mean()) < 0.05:
            continue
        ac = np.correlate(frame, frame, "full")[639:]
        lo, hi = rate // 500, rate // 60
        pitches.append(rate / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(pitches))


def test_demo_corpus_is_deterministic_and_speech_like():
    a = demo.synthesize_utterance(1, 3, 1.5)
    b = demo.synthesize_utterance(1, 3, 1.5)
    assert a.dtype == np.float32 and a.shape == (24000,)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, demo.synthesize_utterance(1, 4, 1.5))
    assert np.abs(a).max() <= 0.71
    quiet = np.mean(np.abs(a.reshape(-1, 160)).max(1) < 0.02)
    assert 0.02 < quiet < 0.6  # pauses and closures, but mostly sound


def test_demo_speakers_differ_in_pitch():
    low = np.median([dominant_pitch(demo.synthesize_utterance(0, u, 2.0), 16000) for u in range(3)])
    high = np.median([dominant_pitch(demo.synthesize_utterance(3, u, 2.0), 16000) for u in range(3)])
    assert high > 1.6 * low


def test_demo_corpus_split_is_fixed_and_disjoint():
    corpus = prepare_corpus(DataConfig(kind="demo"))
    assert corpus.speakers == ["demo0", "demo1", "demo2", "demo3"] and len(corpus) == 96
    train, valid = heldout_split(corpus, 2, 32)
    assert len(valid) == 8 and not set(train) & set(valid) and len(train) + len(valid) == 96
    assert (train, valid) == heldout_split(corpus, 2, 32)
    assert sorted({corpus.speaker_index[i] for i in valid}) == [0, 1, 2, 3]


def test_vctk_092_layout_on_real_files(shared_data):
    files = list_vctk(shared_data / "vctk_mini")
    assert len(files) == 40
    assert {f.speaker for f in files} == {"p225", "p226", "p227", "p228"}
    assert all(f.path.name.endswith("_mic1.flac") for f in files)
    assert files[0].utterance_id.startswith("p225_") and "mic" not in files[0].utterance_id


def test_vctk_080_layout_on_real_files(shared_data, tmp_path):
    root = tmp_path / "VCTK-Corpus"
    root.mkdir()
    os.symlink(shared_data / "vctk_mini" / "wav48", root / "wav48")
    shutil.copy(shared_data / "vctk_mini" / "speaker-info.txt", root / "speaker-info.txt")
    files = list_vctk(root)
    assert {f.speaker for f in files} == {"p238", "p255", "p301", "p314", "p317", "p376"}
    assert all(f.path.suffix == ".wav" for f in files)
    info = read_speaker_info(root)
    assert info["p238"]["gender"] == "F" and info["p238"]["accent"] == "NorthernIrish"
    assert info["p301"]["region"] == "North Carolina"


def test_vctk_corpus_is_resampled_cached_and_split(shared_data, isolated_cache):
    config = DataConfig(kind="vctk", root=str(shared_data / "vctk_mini"), sample_rate=16000)
    seen = []
    corpus = prepare_corpus(config, lambda done, total: seen.append((done, total)))
    assert seen[-1] == (40, 40)
    assert corpus.speakers == ["p225", "p226", "p227", "p228"]
    assert corpus.speaker_info["p225"]["gender"] == "F"
    # the 16 kHz copies shipped beside the 48 kHz flac are the reference for the resampling
    ref, rate = sf.read(shared_data / "vctk_mini" / "wav16" / "p225" / "p225_003.wav", dtype="float32")
    index = corpus.ids.index("p225_003")
    assert rate == 16000 and abs(corpus.lengths[index] - ref.size) <= 2
    ours = corpus.audio(index)[: ref.size]
    n = min(ours.size, ref.size)
    corr = np.corrcoef(ours[:n], ref[:n])[0, 1]
    assert corr > 0.95
    crop = corpus.crop(index, corpus.lengths[index] - 10, 100)  # past the end: zero padded
    assert crop.shape == (100,) and np.all(crop[10:] == 0)
    # a second preparation reads the cache and converts nothing
    again = []
    cached = prepare_corpus(config, lambda d, t: again.append(d))
    assert again == [] and cached.lengths == corpus.lengths
    train, valid = heldout_split(corpus, 1, 32)
    assert len(valid) == 4 and len(train) == 36


def test_folder_corpus_takes_speaker_from_file_name(shared_data):
    files = list_folder(shared_data / "fsdd" / "recordings", "filename", r"^\d+_(?P<speaker>[a-z]+)_\d+$")
    assert len(files) == 3000
    assert {f.speaker for f in files} == {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}


def test_folder_corpus_takes_speaker_from_sub_folder(shared_data, tmp_path):
    for speaker in ("alice", "bob"):
        (tmp_path / speaker).mkdir()
        for take in range(3):
            name = f"{take}_{'george' if speaker == 'alice' else 'theo'}_{take}.wav"
            os.symlink(shared_data / "fsdd" / "recordings" / name, tmp_path / speaker / f"take{take}.wav")
    config = DataConfig(kind="folder", root=str(tmp_path), sample_rate=16000)
    corpus = prepare_corpus(config)
    assert corpus.speakers == ["alice", "bob"] and len(corpus) == 6
    original, rate = sf.read(shared_data / "fsdd" / "recordings" / "0_george_0.wav")
    assert rate == 8000
    assert abs(corpus.lengths[corpus.ids.index("alice/take0")] - 2 * original.size) <= 2


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(VQAudioError, match="no such folder"):
        list_folder(tmp_path / "missing")
    with pytest.raises(VQAudioError, match="no audio files"):
        list_folder(tmp_path)
    sf.write(tmp_path / "noprefix.wav", np.zeros(100), 8000)
    with pytest.raises(VQAudioError, match="does not match data.speaker_pattern"):
        list_folder(tmp_path, "filename", r"^(?P<speaker>\d+)_")
    with pytest.raises(VQAudioError, match="group named 'speaker'"):
        list_folder(tmp_path, "filename", r"^(\d+)_")
    with pytest.raises(VQAudioError, match="not a VCTK folder"):
        list_vctk(tmp_path)


def test_corrupt_file_in_a_corpus_is_named(tmp_path):
    (tmp_path / "spk").mkdir()
    (tmp_path / "spk" / "broken.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(VQAudioError, match=r"broken\.wav: cannot read it as audio"):
        prepare_corpus(DataConfig(kind="folder", root=str(tmp_path)))


def test_held_out_cap_still_spreads_over_speakers():
    corpus = prepare_corpus(DataConfig(kind="demo"))
    _, valid = heldout_split(corpus, 2, 3)
    assert len(valid) == 3
    assert len({corpus.speaker_index[i] for i in valid}) == 3


def test_crops_stay_correct_when_memory_maps_are_recycled(shared_data, monkeypatch):
    from vqaudio.data import corpus as corpus_module

    config = DataConfig(kind="vctk", root=str(shared_data / "vctk_mini"), sample_rate=8000)
    corpus = prepare_corpus(config)
    expected = [corpus.crop(i, 100, 50) for i in range(len(corpus))]
    monkeypatch.setattr(corpus_module, "MAX_OPEN_MAPS", 3)
    fresh = prepare_corpus(config)
    for _ in range(2):
        for i in range(len(fresh)):
            assert np.array_equal(fresh.crop(i, 100, 50), expected[i])
    assert len(fresh._maps) <= 3
