"""The command line with a researcher's own data: separate split files, other array
names, string labels carried through a run, a new held-out set, the outputs a run
writes (history.json, embeddings.npz, precision@k and Recall@K), and BLAS threads."""
import json

import numpy as np
import pytest

from acmr_np import train
from acmr_np.train import main

SMALL = ["--epochs", "3", "--img-hidden", "16", "--txt-hidden", "8", "--dim", "8", "--batch-size", "32"]


def _pairs(rng, n, names=("b", "a", "c")):
    labels = np.array(names)[np.arange(n) % len(names)]
    centres = {c: rng.normal(size=12) for c in sorted(names)}
    x = np.stack([centres[c] for c in labels]) + 0.5 * rng.normal(size=(n, 12))
    return x[:, :7], x[:, 7:], labels


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 150), ("test", 60), ("new", 45)):
        img, txt, y = _pairs(rng, n)
        out[split] = tmp_path / f"{split}.npz"
        np.savez(out[split], X=img, T=txt, y=y)
    return out


def test_split_files_keys_and_string_labels_through_a_run(files, tmp_path, capsys):
    keys = "img=X,txt=T,label=y"
    out = tmp_path / "run"
    assert main(SMALL + ["--train", str(files["train"]), "--test", str(files["test"]), "--keys", keys,
                         "--out", str(out), "--save-embeddings"]) == 0
    printed = capsys.readouterr().out
    assert "labels mapped to class ids in sorted order (saved with the run): 0=a, 1=b, 2=c" in printed
    config = json.load(open(out / "config.json"))
    assert config["source"] == {"data": None, "train": str(files["train"]), "val": None,
                                "test": str(files["test"]), "keys": {"img": "X", "txt": "T", "label": "y"}}
    meta = json.loads(str(np.load(out / "checkpoint.npz")["meta"]))
    assert meta["classes"] == ["a", "b", "c"] and meta["source"]["keys"] == {"img": "X", "txt": "T", "label": "y"}
    # history.json: the checkpoint's own rows, every logged term
    history = json.load(open(out / "history.json"))
    assert history == meta["history"] and len(history) == 3
    assert {"L_imi", "L_imd", "L_reg", "L_adv", "adv_acc", "lam", "val_map", "seconds"} <= set(history[0])
    # embeddings.npz: the test split through the kept model, with ids and class names
    saved = np.load(out / "embeddings.npz")
    assert saved["classes"].tolist() == ["a", "b", "c"]
    with np.load(files["test"]) as z:
        np.testing.assert_array_equal(saved["labels"], np.searchsorted(["a", "b", "c"], z["y"]))
        from acmr_np import load_model
        model = load_model(out)
        np.testing.assert_array_equal(saved["txt"], model.embed_texts(z["T"]))
    # --resume reloads the same files by their recorded source (the run is finished here)
    assert main(["--resume", str(out), "--epochs", "4"]) == 0
    assert len(json.load(open(out / "history.json"))) == 4
    assert (out / "embeddings-epoch3.npz").exists() and (out / "embeddings.npz").exists()


def test_eval_only_on_a_new_held_out_file(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "20", "--train", str(files["train"]), "--test", str(files["test"]),
                         "--keys", "img=X,txt=T,label=y", "--out", str(out)]) == 0
    trained = json.load(open(out / "metrics.json"))
    capsys.readouterr()
    # a file with only test arrays, under --test or --data: its labels mapped by the run's classes
    for flag in ("--test", "--data"):
        dest = tmp_path / f"eval{flag}"
        assert main(["--eval-only", "--checkpoint", str(out), flag, str(files["new"]),
                     "--keys", "img=X,txt=T,label=y", "--out", str(dest), "--save-embeddings"]) == 0
        metrics = json.load(open(dest / "metrics.json"))
        # new pairs of the same classes score about as the run's own test split (chance: 1/3)
        assert metrics["data"] == str(files["new"]) and abs(metrics["map_avg"] - trained["map_avg"]) < 0.15
        assert metrics["map_avg"] > 0.5
        assert np.load(dest / "embeddings.npz")["img"].shape == (45, 8)
    assert "test on" in capsys.readouterr().out
    # a label the run never saw is named
    with np.load(files["new"]) as z:
        arrays = dict(z)
    arrays["y"] = np.where(arrays["y"] == "a", "zebra", arrays["y"])
    np.savez(tmp_path / "odd.npz", **arrays)
    assert main(["--eval-only", "--checkpoint", str(out), "--test", str(tmp_path / "odd.npz"),
                 "--keys", "img=X,txt=T,label=y"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zebra" in err


def test_data_flags_are_refused_clearly(files, tmp_path, capsys):
    cases = [
        (["--data", str(files["train"]), "--train", str(files["train"]), "--test", str(files["test"])],
         "either path or train=/test= files, not both"),
        (["--train", str(files["train"])], "needs both train= and test="),
        (["--train", str(files["train"]), "--test", str(files["test"]), "--keys", "img_train"],
         "img_train"),
        (["--train", str(files["train"]), "--test", str(files["test"])], "no train split"),
    ]
    for argv, message in cases:
        assert main(SMALL + argv + ["--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
        assert not (tmp_path / "x").exists()


def test_threads_limit_blas_during_the_run(monkeypatch, tmp_path):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    real = train._train

    def spy(args):
        seen.append({i["user_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()})
        return 0

    monkeypatch.setattr(train, "_train", spy)
    before = {i["user_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
    assert main(["--threads", "1"]) == 0 and main([]) == 0 and main(["--threads", "0"]) == 0
    if "blas" in before:
        assert seen[0]["blas"] == 1 and seen[1]["blas"] == 1           # --threads 1, and the default
        assert seen[2]["blas"] == before["blas"]                      # 0: the library's own choice
    after = {i["user_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
    assert after == before                                            # put back afterwards
    monkeypatch.setattr(train, "_train", real)
    assert main(["--threads", "-1", "--out", str(tmp_path / "x")]) == 2


def test_threads_without_threadpoolctl_is_one_line(monkeypatch, tmp_path, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)   # as if it were not installed
    assert main(["--threads", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--threads needs threadpoolctl" in err and "--threads 0" in err
    assert not (tmp_path / "x").exists()


def test_baselines_and_tune_read_the_same_files(files, tmp_path, capsys):
    from acmr_np import baselines, tune
    data = ["--train", str(files["train"]), "--test", str(files["test"]), "--keys", "img=X,txt=T,label=y"]
    assert baselines.main(data + ["--out", str(tmp_path / "base")]) == 0
    saved = json.load(open(tmp_path / "base" / "baselines.json"))
    assert saved["sizes"] == {"train": 135, "val": 15, "test": 60}   # 10% of 150 held out, stratified
    assert tune.main(data + ["--trials", "1", "--seeds", "0", "--epochs", "1", "--jobs", "1",
                             "--out", str(tmp_path / "search")]) == 0
    printed = capsys.readouterr().out
    assert f"--train {files['train']} --test {files['test']} --keys img=X,txt=T,label=y" in printed
