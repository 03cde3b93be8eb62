"""Shipped offline lm-eval tasks: exact prompt lengths, the Python API, the command line, no truncation."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_helpers import convert_cli, tiny_pair
from module_file import load_module
from needle_oracle import oracle_model

from slconvert.assets import TINY_TEACHER
from slconvert.errors import SlconvertError
from slconvert.evaluation.lmeval import resolve_tasks, run_lm_eval, shipped_tasks_dir
from slconvert.evaluation.models import load_eval_model
from slconvert.evaluation.perplexity import document_nll
from slconvert.tasks.documents import needle_documents
from slconvert.tasks.haystack import RepeatHaystack

# lm-eval in a child process of its own: one thread per library, no worker processes, hub and nltk offline, and
# a time limit, so that a stuck evaluation fails the test instead of hanging the suite.
SAFE_ENV = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "DISABLE_MULTIPROC": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run_safely(command: list[str], timeout: int, **kwargs) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **SAFE_ENV}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


TASK_FILES = ("slc_single.yaml", "slc_passkey.yaml", "slc_passkey_tf.yaml", "slc_multikey.yaml",
              "slc_longdoc_ppl.yaml")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("eval_lmeval"), seed=3)[1]


def _task_data_module():
    return load_module(shipped_tasks_dir() / "slc_data.py", "slc_data_under_test")


def test_shipped_tasks_exist():
    for name in TASK_FILES:
        assert (shipped_tasks_dir() / name).is_file(), name


def test_task_data_has_exact_lengths(converted):
    from transformers import AutoTokenizer

    data = _task_data_module()
    tok = AutoTokenizer.from_pretrained(converted)
    for builder in (data.single, data.passkey, data.multikey):
        rows = builder(pretrained=str(converted), max_seq_lengths=[400, 450], num_samples=3)["test"]
        assert len(rows) == 6
        assert [len(tok(r["input"])["input_ids"]) for r in rows] == [400] * 3 + [450] * 3
        assert all(r["outputs"][0] in r["input"] and r["answer"] == " " + r["outputs"][0] for r in rows)
        assert [rows[i]["depth"] for i in range(3)] == [0.0, 50.0, 100.0]
    # Every needle sentence in the format the training recipes use; the pass key sits in the repeated filler, and
    # the multi-key distractors hold words unless the metadata asks for numbers (then only the key tells them apart).
    passkey = data.passkey(pretrained=str(converted), max_seq_lengths=[400], num_samples=1)["test"][0]
    assert "One of the special magic numbers for " in passkey["input"]
    assert passkey["input"].count(RepeatHaystack.FILLER.split(".")[0]) >= 3
    for kind, pattern in (("words", r"is: [a-z]+-[a-z]+\."), ("numbers", r"is: \d{7}\.")):
        multi = data.multikey(pretrained=str(converted), max_seq_lengths=[400], num_samples=1, distractor_kind=kind)
        found = re.findall(r"One of the special magic \w+ for \S+ " + pattern, multi["test"][0]["input"])
        assert len(found) == 3 + (kind == "numbers"), (kind, found)
    assert data.single(pretrained=str(converted), max_seq_lengths=[400], num_samples=2)["test"].to_list() == \
        needle_documents(tok, "single", [400], 2)  # one builder: `slconvert.tasks.documents`
    with pytest.raises(SlconvertError, match="distractor_kind 'digits' is not a needle kind"):
        data.multikey(pretrained=str(converted), max_seq_lengths=[400], num_samples=1, distractor_kind="digits")
    docs = data.long_documents(doc_chars=900, num_docs=2)["test"]
    assert len(docs) == 2 and docs[0]["text"] != docs[1]["text"] and len(docs[0]["text"]) <= 900
    with pytest.raises(ValueError, match="tokenizer"):
        data.passkey(max_seq_lengths=[400])


def test_needle_documents_are_the_needle_prompts_of_their_seed_sample_and_depth():
    """Row i of a length is `build_sample` of the task's haystack drawn from the same seed, at depth 100 i / (n - 1)
    and sample index i (so the rows of a length differ); a seed other than 0 reaches both the haystack and the
    needles, and the multi-key task's distractors hold words. Long documents end at a sentence's end, within their
    character budget, each its own text."""
    from transformers import ByT5Tokenizer

    from slconvert.tasks.documents import long_documents
    from slconvert.tasks.haystack import load_haystack
    from slconvert.tasks.niah import build_sample

    tok = ByT5Tokenizer()
    rows = needle_documents(tok, "passkey", [500], num_samples=3, seed=5)
    assert [r["depth"] for r in rows] == [0.0, 50.0, 100.0] and [r["length"] for r in rows] == [500] * 3
    for index, row in enumerate(rows):
        want = build_sample(tok, load_haystack("repeat", seed=5), "single", 500, row["depth"], index, seed=5)
        assert (row["input"], row["answer"], row["outputs"]) == (want.prompt, want.answer, want.expected)
    assert len({r["answer"] for r in rows}) == 3
    single = needle_documents(tok, "single", [500], num_samples=1, seed=5)[0]
    want = build_sample(tok, load_haystack("builtin", seed=5), "single", 500, 0.0, 0, seed=5)
    assert single["input"] == want.prompt and single["depth"] == 0.0
    # the multi-key task's three distractors hold words unless asked otherwise: one numeric needle among them
    multi = needle_documents(tok, "multikey", [900], num_samples=1)[0]["input"]
    assert len(re.findall(r"One of the special magic \w+ for \S+ is: [a-z]+-[a-z]+\.", multi)) == 3
    assert len(re.findall(r"One of the special magic \w+ for \S+ is: \d+\.", multi)) == 1
    with pytest.raises(SlconvertError, match="num_samples is 0; give at least 1 prompt per length"):
        needle_documents(tok, "single", [500], num_samples=0)
    docs = long_documents(chars=700, count=3)
    assert len({d["text"] for d in docs}) == 3
    assert all(d["text"].endswith(".") and 600 < len(d["text"]) <= 700 for d in docs)


def test_resolve_task_names_and_yaml_paths(tmp_path):
    names, include = resolve_tasks("slc_passkey, " + str(shipped_tasks_dir() / "slc_multikey.yaml"))
    assert names == ["slc_passkey", "slc_multikey"] and include == [str(shipped_tasks_dir())]
    with pytest.raises(SlconvertError, match="does not exist"):
        resolve_tasks(str(tmp_path / "missing.yaml"))
    (tmp_path / "nameless.yaml").write_text("output_type: generate_until\n")
    with pytest.raises(SlconvertError, match="no `task:` name"):
        resolve_tasks(str(tmp_path / "nameless.yaml"))


def test_python_api_on_shipped_tasks(converted):
    em = load_eval_model(converted, device="cpu")
    out = run_lm_eval(em, "slc_passkey,slc_multikey,slc_longdoc_ppl", max_length=1024, task_lengths=[420],
                      task_metadata={"num_samples": 2, "doc_chars": 1500, "num_docs": 2})
    results = out["results"]
    assert set(results) == {"slc_passkey", "slc_multikey", "slc_longdoc_ppl"}
    for task in ("slc_passkey", "slc_multikey"):  # scores of known answers: the next test
        assert results[task]["sample_len"] == 2 and "exact_match,none" in results[task]
    # lm-eval's rolling log-likelihood of each document (shorter than max_length: one window, after the BOS token),
    # against the same sums taken by the model directly
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(converted)
    nll = size = 0
    for doc in _task_data_module().long_documents(doc_chars=1500, num_docs=2)["test"]:
        ids = tok(doc["text"], add_special_tokens=False)["input_ids"]
        assert len(ids) < 1024
        nll += document_nll(em.model, [tok.bos_token_id, *ids], chunk=1024)[0]
        size += len(doc["text"].encode())
    assert results["slc_longdoc_ppl"]["bits_per_byte,none"] == pytest.approx(nll / size / math.log(2), rel=1e-6)


def test_shipped_needle_tasks_score_models_whose_answers_are_known():
    """Through lm-eval's generation path: copying the asked needle scores 1, never answering 0."""
    for behaviour, expected in (("copy", 1.0), ("never", 0.0)):
        out = run_lm_eval(oracle_model(TINY_TEACHER, behaviour), "slc_single,slc_passkey,slc_multikey",
                          max_length=1024, task_lengths=[400], task_metadata={"num_samples": 3})
        scores = {task: r["exact_match,none"] for task, r in out["results"].items()}
        assert scores == dict.fromkeys(("slc_single", "slc_passkey", "slc_multikey"), expected), behaviour


def test_requests_over_max_length_are_refused_not_truncated(converted):
    em = load_eval_model(converted, device="cpu")
    with pytest.raises(SlconvertError, match="never truncated"):
        run_lm_eval(em, "slc_passkey", max_length=410, task_lengths=[420], task_metadata={"num_samples": 1})
    with pytest.raises(SlconvertError, match="never truncated"):
        run_lm_eval(em, "slc_passkey_tf", max_length=410, task_lengths=[420], task_metadata={"num_samples": 1})


def test_the_run_hands_lm_eval_the_limit_batch_size_seed_and_task_lengths(monkeypatch):
    """What `run_lm_eval` passes on, as lm-eval receives it: --limit documents per task, --batch-size requests per
    batch, --seed for every generator lm-eval seeds (few-shot sampling too), --task-lengths as the tasks'
    max_seq_lengths beside the user's --task-metadata; of the results, only the JSON-safe parts come back."""
    import lm_eval

    from slconvert.evaluation import lmeval

    asked = {}

    class Model:
        def __init__(self, **kwargs):
            asked["model"] = kwargs

    def simple_evaluate(**kwargs):
        asked["run"] = kwargs
        return {"results": {"slc_passkey": {"exact_match,none": 0.5}}, "n-shot": {"slc_passkey": 0}, "config": Model}

    monkeypatch.setattr(lmeval, "register", lambda: Model)
    monkeypatch.setattr(lmeval, "task_manager", lambda names, include, metadata=None: ("manager", names, metadata))
    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    em = SimpleNamespace(path=Path("runs/model"), model="the model", tokenizer="the tokenizer")
    out = run_lm_eval(em, "slc_passkey", max_length=512, batch_size=4, limit=3, seed=7, task_lengths=[256, 512],
                      task_metadata={"num_samples": 2, "tokenizer": "runs/tokenizer"})
    assert out == {"results": {"slc_passkey": {"exact_match,none": 0.5}}, "n-shot": {"slc_passkey": 0}}
    assert asked["model"] == {"pretrained": "the model", "tokenizer": "the tokenizer", "max_length": 512,
                              "batch_size": 4}
    run = asked["run"]
    assert run["tasks"] == ["slc_passkey"] and run["limit"] == 3 and run["model"].__class__ is Model
    assert [run[key] for key in ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed")] \
        == [7, 7, 7, 7]
    # the user's --task-metadata comes last: it may name another tokenizer for the tasks' prompt builders
    metadata = {"pretrained": "runs/model", "tokenizer": "runs/tokenizer", "max_length": 512, "seed": 7,
                "num_samples": 2, "max_seq_lengths": [256, 512]}
    assert run["metadata"] == metadata and run["task_manager"] == ("manager", ["slc_passkey"], metadata)


def test_a_prompt_or_request_one_token_over_its_budget_is_refused_and_one_that_fits_is_not(monkeypatch):
    """The edges of the no-truncation rule: a generation prompt of exactly the budget lm-eval leaves it (max_length
    less the generation budget) runs whole, one token more is refused; a log-likelihood request of max_length + 1
    tokens (its last token is only predicted) is scored, one more is refused."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from slconvert.evaluation.lmeval import register

    lm = object.__new__(register())  # the checks need the tokenizer and max_length, not a model
    lm.tokenizer, lm.backend, lm.add_bos_token, lm._max_length = AutoTokenizer.from_pretrained(TINY_TEACHER), \
        "causal", None, 16
    text = "The grass is green. The sky is blue."
    size = lm.tokenizer([text], return_tensors="pt")["input_ids"].shape[1]
    ids, _ = lm.tok_batch_encode([text], left_truncate_len=size)
    assert ids.tolist() == lm.tokenizer([text])["input_ids"]
    with pytest.raises(SlconvertError, match=f"an lm-eval prompt has {size} tokens but only {size - 1} fit"):
        lm.tok_batch_encode([text], left_truncate_len=size - 1)
    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", lambda self, requests, **kwargs: ["scored"] * len(requests))
    assert lm._loglikelihood_tokens([(None, list(range(10)), list(range(7)))]) == ["scored"]
    with pytest.raises(SlconvertError, match=r"an lm-eval request has 18 tokens, over max_length 16 \+ 1"):
        lm._loglikelihood_tokens([(None, list(range(11)), list(range(7)))])


def test_evaluation_runs_offline_without_worker_processes_and_reads_essays_from_subfolders(tmp_path, monkeypatch):
    """`offline_environment` turns off the hub for every library and lm-eval's worker pool (a fork of a process
    running torch threads can hang); --ruler-essays reads the .txt files of its subfolders too, in path order."""
    from slconvert.evaluation.lmeval import essay_files, offline_environment

    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "DISABLE_MULTIPROC")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    offline_environment()
    assert [os.environ.get(name) for name in names] == ["1"] * 4
    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ("z.txt", "b/a.TXT", "b/c/d.txt", "b/notes.md"):
        (tmp_path / name).write_text("An essay.")
    assert [p.relative_to(tmp_path).as_posix() for p in essay_files(tmp_path)] == ["b/a.TXT", "b/c/d.txt", "z.txt"]


def test_lm_eval_command_line_runs_a_converted_model(tmp_path):
    """The shipped teacher converted with a window longer than the prompts (W = 440 keys), so that its Superlinear
    layers attend every key and the teacher's score is known: it finds every pass key."""
    converted = convert_cli(TINY_TEACHER, tmp_path / "teacher-converted", "--sw-index", "20")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "slconvert.evaluation.lm_eval_cli", "--model", "slconvert",
               "--model_args", f"pretrained={converted},max_length=1024", "--tasks", "slc_passkey_tf",
               "--metadata", json.dumps({"max_seq_lengths": [400], "num_samples": 3}), "--device", "cpu",
               "--output_path", str(tmp_path / "results")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "slc_passkey_tf" in done.stdout
    files = list((tmp_path / "results").rglob("results_*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())["results"]["slc_passkey_tf"]
    assert result["sample_len"] == 3 and result["acc,none"] == 1.0, result


def test_lm_eval_command_line_indexes_the_include_path_alone_when_it_holds_every_task():
    """lm-eval's command line indexes every task it ships before it reads --tasks (some 15,000 files); ours builds
    the index from the include path alone when every task named is there, and from both otherwise."""
    from slconvert.evaluation.lm_eval_cli import include_first, named_tasks

    built = []

    class Manager:  # stands in for lm-eval's TaskManager: records what each build indexed
        def __init__(self, include_path=None, include_defaults=True, metadata=None):
            built.append(include_defaults)
            self.all_tasks = ["slc_passkey"] + (["hellaswag"] if include_defaults else [])

    assert named_tasks(["--model", "hf", "--tasks", "slc_passkey, hellaswag", "--tasks=x"]) == \
        ["slc_passkey", "hellaswag", "x"]
    assert named_tasks(["--tasks", "slc_passkey,evals/tasks/mine.yaml"]) == []  # files: lm-eval resolves them
    for names, kwargs, expected in ((["slc_passkey"], {}, [False]), (["slc_passkey", "hellaswag"], {}, [False, True]),
                                    ([], {}, [True]), (["slc_passkey"], {"include_defaults": False}, [False])):
        built.clear()
        manager = include_first(Manager, names)(include_path="evals/tasks", **kwargs)
        assert built == expected, (names, kwargs, built)
        assert all(n in manager.all_tasks for n in names)


def test_lm_eval_command_line_task_names_and_builds_at_their_edges():
    """A folder or a pattern given to --tasks is lm-eval's to resolve (no names: the full index); empty items of a
    comma list are no names; a --tasks flag with nothing after it names nothing. A caller that asks for no built-in
    tasks gets none, whether or not its names are all on the include path."""
    from slconvert.evaluation.lm_eval_cli import include_first, named_tasks

    assert named_tasks(["--tasks", "evals/tasks"]) == [] and named_tasks(["--tasks=slc_*"]) == []
    assert named_tasks(["--tasks", "slc_passkey,,hellaswag,"]) == ["slc_passkey", "hellaswag"]
    assert named_tasks(["--model", "hf", "--tasks"]) == []
    built = []

    class Manager:
        def __init__(self, include_path=None, include_defaults=True, metadata=None):
            built.append(include_defaults)
            self.all_tasks = ["slc_passkey"] + (["hellaswag"] if include_defaults else [])

    for names in ([], ["hellaswag"]):
        built.clear()
        include_first(Manager, names)(include_path="evals/tasks", include_defaults=False)
        assert built == [False], (names, built)


def test_lm_eval_command_line_adds_the_shipped_tasks_unless_an_include_path_is_given(monkeypatch):
    """`--include_path DIR` and `--include_path=DIR` both keep the caller's path; without either the shipped
    tasks folder is added. lm-eval's entry point is replaced by one that records the arguments it would read."""
    import lm_eval.__main__
    import lm_eval.tasks

    from slconvert.evaluation import lm_eval_cli

    seen = []
    monkeypatch.setattr(lm_eval_cli, "offline_environment", lambda: None)
    monkeypatch.setattr(lm_eval_cli, "register", lambda: None)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", lm_eval.tasks.TaskManager)  # put back after the test
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: seen.append(list(sys.argv)))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    for args, expected in ((["--tasks", "x", "--include_path=mine"], ["lm_eval", "--tasks", "x", "--include_path=mine"]),
                           (["--include_path", "mine"], ["lm_eval", "--include_path", "mine"]),
                           (["--tasks", "x"], ["lm_eval", "--tasks", "x", "--include_path", str(shipped_tasks_dir())])):
        seen.clear()
        lm_eval_cli.main(args)
        assert seen == [expected], args


NEEDLE_TASKS = ("slc_single", "slc_passkey", "slc_multikey", "slc_passkey_tf")


def without_attention(path: Path):
    """The checkpoint at `path` with every attention layer's output projection zeroed: it cannot look back."""
    em = load_eval_model(path, device="cpu")
    zeroed = [name for name, module in em.model.named_modules() if name.endswith(".o_proj")]
    for name in zeroed:
        em.model.get_submodule(name).weight.data.zero_()
    assert len(zeroed) == 2, zeroed  # the teacher's two attention layers
    return em


def test_shipped_needle_tasks_tell_a_retrieving_model_from_one_that_cannot():
    """The shipped teacher (100% on `slconvert eval --niah`) scores high on every shipped needle task; the same
    teacher with its attention output zeroed scores near 0 on them. 5 documents each at 256 tokens."""
    scores = {}
    for name, em in (("teacher", load_eval_model(TINY_TEACHER, device="cpu")),
                     ("no attention", without_attention(TINY_TEACHER))):
        out = run_lm_eval(em, ",".join(NEEDLE_TASKS), max_length=1024, task_lengths=[256],
                          task_metadata={"num_samples": 5})["results"]
        scores[name] = {task: out[task]["exact_match,none" if task != "slc_passkey_tf" else "acc,none"]
                        for task in NEEDLE_TASKS}
    assert all(score >= 0.8 for score in scores["teacher"].values()), scores
    assert all(score <= 0.2 for score in scores["no attention"].values()), scores


def test_ruler_tasks_offline_and_refused(tmp_path):
    from slconvert.evaluation.lmeval import RULER_ESSAY_TASKS, with_ruler

    assert with_ruler(None) == "niah_single_1,niah_multikey_2,niah_multikey_3"
    assert with_ruler("slc_single,niah_single_1") == "slc_single,niah_single_1,niah_multikey_2,niah_multikey_3"
    assert with_ruler(None, essays=True).split(",")[3:] == list(RULER_ESSAY_TASKS)
    with pytest.raises(SlconvertError, match="niah_single_2 reads Paul Graham's essays, which this tool never "
                                             "downloads: save .* pass --ruler-essays DIR"):
        resolve_tasks("niah_single_1,niah_single_2")
    with pytest.raises(SlconvertError, match="ruler_qa_squad downloads the SQuAD data set"):
        resolve_tasks("ruler_qa_squad", essays=tmp_path)
    with pytest.raises(SlconvertError, match="--ruler-essays .*missing is not a folder"):
        resolve_tasks("niah_multivalue", essays=tmp_path / "missing")
    with pytest.raises(SlconvertError, match="holds no .txt files"):
        resolve_tasks("niah_multivalue", essays=tmp_path)
    _write_essays(tmp_path)
    with pytest.raises(SlconvertError, match="--ruler-essays is read only by RULER's essay tasks"):
        resolve_tasks("niah_single_1", essays=tmp_path)
    names, _ = resolve_tasks("niah_single_1,niah_multivalue", essays=tmp_path)
    assert names == ["niah_single_1", "niah_multivalue"]


# A small essay haystack of this project's own writing: plain sentences, no abbreviations (a splitter without a
# trained model would break after them), short enough to fit a 1024-token RULER prompt whole.
ESSAYS = {
    "01-orchard.txt": "The orchard behind the old mill was planted by a farmer who never saw it bear fruit. He chose "
                      "pears because they keep well in a cold cellar. Each spring the blossoms came before the last "
                      "frost, and each year he worried that the cold would take them.\n\nHis daughter kept a "
                      "notebook of the harvests. Some years the branches bent to the ground; other years there was "
                      "barely a basket. She learned that the trees paid no attention to how hard anyone worked. "
                      "What mattered was the weather in one short week of April.\n",
    "02-ferry.txt": "A small ferry crosses the lake twice a day. The captain knows every rock below the surface, "
                    "though he has never seen most of them. Passengers ask him how he does it. He says that he "
                    "simply remembers where the boat did not hit anything.\n\n  In winter the ferry stops, and "
                    "the village on the far shore is reached by a long road around the water. Nobody minds very "
                    "much. The road passes a bakery that sells bread still warm at seven in the morning, and the "
                    "detour has become a habit of its own.\n",
}


def _write_essays(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ESSAYS.items():
        (folder / name).write_text(text)
    return folder


def _essay_sentences() -> list[str]:
    text = re.sub(r"\s+", " ", " ".join(ESSAYS.values())).strip()
    return re.split(r"(?<=[.!?]) ", text)


def test_ruler_essay_task_without_a_folder_is_one_line(tmp_path):
    """lm-eval's essay tasks are refused before any model is loaded, saying what to download and where it goes."""
    from click.testing import CliRunner

    from slconvert.cli import main

    for args, message in (
            (["--tasks", "niah_single_2"], "lm-eval task niah_single_2 reads Paul Graham's essays, which this tool "
                                           "never downloads: save Paul Graham's essays as .txt files in a folder"),
            (["--ruler", "--ruler-essays", tmp_path / "missing"], f"--ruler-essays {tmp_path / 'missing'} is not a "
                                                                  "folder"),
            (["--niah", "--ruler-essays", tmp_path], "--ruler-essays is read only by lm-eval's RULER essay tasks")):
        result = CliRunner().invoke(main, ["eval", str(TINY_TEACHER), *map(str, args), "--device", "cpu",
                                           "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output
        assert not (tmp_path / "out").exists()
        assert lines[0].endswith("and pass --ruler-essays DIR") or args[0] == "--niah", lines[0]


def ruler_essay_answers(out: Path, essays: Path) -> None:
    """`slconvert eval --tasks niah_single_2 --ruler-essays DIR` on models whose answers are known, with every
    internet connection refused; then lm-eval's first prompt of that task built from the same folder. Run in a
    child process."""
    import socket

    from click.testing import CliRunner

    connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"this test must not use the network (tried {address})")
        return connect(sock, address)

    socket.socket.connect = local_only
    from slconvert.cli import main
    from slconvert.evaluation import models
    from slconvert.evaluation.lmeval import ruler_essay_haystack

    models.load_eval_model = lambda path, **_: oracle_model(TINY_TEACHER, path.name)
    for name in ("copy", "never"):  # checked as checkpoints before loading
        (out / name).symlink_to(TINY_TEACHER, target_is_directory=True)
    result = CliRunner().invoke(main, ["eval", str(out / "copy"), "--compare", str(out / "never"),
                                       "--tasks", "niah_single_2", "--ruler-essays", str(essays),
                                       "--task-lengths", "1024", "--limit", "2", "--device", "cpu",
                                       "--out", str(out / "eval")])
    assert result.exit_code == 0, result.output
    with ruler_essay_haystack(essays):  # lm-eval's task module, first imported here, reads the folder
        from lm_eval.tasks.ruler.niah_utils import niah_single_2

        doc = niah_single_2(pretrained=str(TINY_TEACHER), max_seq_lengths=[1024])["test"][0]
    (out / "essay_prompt.json").write_text(json.dumps({"output": result.output, "doc": doc}))


@pytest.mark.slow  # about 30 s in CI; `make test-slow` runs it with the other RULER checks
def test_rulers_essay_task_runs_offline_from_a_local_folder(tmp_path):
    """lm-eval's niah_single_2 with its essay haystack read from a folder, network refused: copying the needle
    scores 1.0, never answering 0.0, and the prompt is the folder's text with the needle between two sentences.

    A child process (SAFE_ENV, a time limit), 2 documents at 1024 tokens: about 20 s on two cores.
    """
    pytest.importorskip("wonderwords")
    essays = _write_essays(tmp_path / "essays")
    done = _run_safely([sys.executable, __file__, "ruler-essay-answers", str(tmp_path), str(essays)], timeout=240,
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "essay_prompt.json").read_text())
    rows = json.loads((tmp_path / "eval" / "summary.json").read_text())["results"]["lm_eval"]["table"]
    assert rows == [{"task": "niah_single_2", "metric": "1024", "copy-oracle": 1.0, "never-oracle (source)": 0.0,
                     "difference": 1.0}]
    words = len(" ".join(ESSAYS.values()).split())
    assert f"RULER essay haystack: {words} words in 2 .txt files from {essays}; sentences split by nltk" in \
        data["output"], data["output"]
    prompt, (value,) = data["doc"]["input"], data["doc"]["outputs"]
    context = prompt.split("\n")[1]  # header, the haystack with the needle, question
    needle = re.search(r"One of the special magic numbers for \S+ is: " + value + r"\.", context)
    assert needle, prompt
    assert all(sentence in context for sentence in _essay_sentences())  # the whole folder, sentences intact
    before, after = context[:needle.start()], context[needle.end():]
    assert before == "" or before.endswith((". ", "! ", "? ")), before  # the needle goes between two sentences
    assert after == "" or after.startswith(" "), after
    assert " ".join(part.strip() for part in (before, after) if part.strip()) == " ".join(_essay_sentences())


def ruler_known_answers(out: Path) -> dict:
    """lm-eval's niah_single_1 at 512 tokens on models whose answers are known; run in a child process.

    Writes {"scores": {model: score}, "prompt": lm-eval's first prompt, "ours": the same needle in our RULER style}.
    """
    from slconvert.evaluation.runner import RunContext, run_tasks
    from slconvert.tasks.haystack import NoiseHaystack
    from slconvert.tasks.niah import build_sample

    scores = {}
    for name in ("copy", "never", "teacher"):
        em = load_eval_model(TINY_TEACHER, device="cpu") if name == "teacher" else oracle_model(TINY_TEACHER, name)
        ctx = RunContext(out=out, model=em, echo=lambda text: None)
        result, _ = run_tasks(ctx, "niah_single_1", batch_size=1, limit=4, task_lengths=[512], task_metadata={})
        scores[name] = next(r[em.name] for r in result["table"] if r["task"] == "niah_single_1" and r["metric"] == "512")
    from lm_eval.tasks.ruler.niah_utils import niah_single_1

    doc = niah_single_1(pretrained=str(TINY_TEACHER), max_seq_lengths=[512])["test"][0]
    ours = build_sample(em.tokenizer, NoiseHaystack(), "single", 512, 50, style="ruler")
    data = {"scores": scores, "prompt": doc["input"] + " " + doc["gen_prefix"], "ours": ours.prompt,
            "lm_eval_tokens": len(em.tokenizer(doc["input"] + " " + doc["gen_prefix"])["input_ids"]),
            "ours_tokens": len(ours.input_ids)}
    (out / "known_answers.json").write_text(json.dumps(data))
    return data


def test_rulers_niah_single_1_scores_models_whose_answers_are_known(tmp_path):
    """lm-eval's own RULER task, offline, in CI: copying the needle scores 1.0, never answering 0.0, and the shipped
    teacher (trained on this tool's prompts) answers most; our RULER-style prompt says what lm-eval's says.

    lm-eval runs in a child process (SAFE_ENV, a time limit), 4 documents at 512 tokens: about 20 s on two cores.
    """
    pytest.importorskip("wonderwords")
    done = _run_safely([sys.executable, __file__, "ruler-known-answers", str(tmp_path)], timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "known_answers.json").read_text())
    scores = data["scores"]
    assert scores["copy"] == 1.0 and scores["never"] == 0.0 and scores["teacher"] >= 0.5, scores
    theirs, ours = data["prompt"], data["ours"]
    mask = re.compile(r"(?<=for )\S+(?= (is:|mentioned))|(?<=is: )\d+")

    def lines(text: str) -> list[str]:  # the same prompt modulo keys and values
        return mask.sub("X", text).splitlines()

    assert lines(ours)[0] == lines(theirs)[0]  # header
    assert lines(ours)[-1] == lines(theirs)[-1]  # question and answer prefix
    assert [line for line in lines(ours) if "special magic" in line][1:-1] == \
        [line for line in lines(theirs) if "special magic" in line][1:-1]  # the needle, on a line of its own
    assert "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again." in lines(ours)
    assert data["ours_tokens"] == 512 - 128 >= data["lm_eval_tokens"]  # RULER fills up to length - 128


def test_a_ruler_length_too_short_for_its_prompts_is_one_line(tmp_path):
    """RULER's prompt builder raised a ValueError (a traceback) at a length with no room for its template, needle
    and answer budget."""
    pytest.importorskip("wonderwords")
    done = _run_safely([sys.executable, "-m", "slconvert.cli", "eval", str(TINY_TEACHER), "--tasks", "niah_multikey_3",
                        "--task-lengths", "256", "--limit", "1", "--device", "cpu", "--out", str(tmp_path / "out")],
                       timeout=240, cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert errors == [errors[-1]] and "cannot build the prompts of niah_multikey_3 at these lengths (Could not " \
        "generate any sample for haystack 'needle' at max_seq_length=256); use longer --task-lengths" in errors[0]


@pytest.mark.slow
def test_needle_tasks_tell_a_retrieving_model_from_a_blind_conversion(tmp_path):
    """lm-eval's RULER niah_single_1 and the shipped needle tasks through `slconvert eval` at 512 tokens: the shipped
    teacher retrieves, a conversion of it that cannot find the needle (anchor key at p = 0.5, untrained) does not
    (10 documents of each task per model; `make test-slow`). Measured: the teacher 0.8 on niah_single_1 and on
    slc_multikey, 1.0 on slc_single and slc_passkey; the blind conversion at most 0.1."""
    pytest.importorskip("wonderwords")
    from cli_helpers import convert_cli

    blind = convert_cli(TINY_TEACHER, tmp_path / "blind", "--backward-factor", "2", "--forward-factor", "1")
    tasks = ("niah_single_1", "slc_single", "slc_passkey", "slc_multikey")
    scores = {}
    for name, path in (("teacher", TINY_TEACHER), ("blind", blind)):
        out = tmp_path / f"eval-{name}"
        done = _run_safely([sys.executable, "-m", "slconvert.cli", "eval", str(path), "--tasks", ",".join(tasks),
                            "--task-lengths", "512", "--limit", "10", "--device", "cpu", "--out", str(out)], timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = json.loads((out / "summary.json").read_text())["results"]["lm_eval"]["table"]
        scores[name] = {task: next(r[path.name] for r in rows if r["task"] == task and r["metric"] in ("512", "exact_match"))
                        for task in tasks}
    assert scores["teacher"]["niah_single_1"] >= 0.6 and scores["blind"]["niah_single_1"] <= 0.2, scores
    assert all(scores["teacher"][task] >= 0.7 and scores["blind"][task] <= 0.2 for task in tasks[1:]), scores


if __name__ == "__main__":  # the child processes of the RULER tests above
    if sys.argv[1:2] == ["ruler-known-answers"]:
        ruler_known_answers(Path(sys.argv[2]))
    if sys.argv[1:2] == ["ruler-essay-answers"]:
        ruler_essay_answers(Path(sys.argv[2]), Path(sys.argv[3]))


def test_lm_eval_bars_keep_a_negative_score_and_its_label_inside_the_plot(tmp_path, drawn_figures):
    """lm-eval reports some metrics below zero (a log-likelihood): the axis reaches past the lowest bar as it does
    past the highest, and each label sits past its bar's end, on its side of zero."""
    import warnings

    from slconvert.evaluation import plots

    rows = [{"task": "lambada", "metric": "loglik", "tiny": -2.0, "src (source)": -1.0},
            {"task": "niah", "metric": "4096", "tiny": 0.5, "src (source)": None}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plots.lm_eval_bars(rows, tmp_path / "bars.png", "tiny", "src")
    assert path.stat().st_size > 0
    ax = drawn_figures[0].axes[0]
    assert ax.get_xlim() == pytest.approx((-2.24, 1.12))
    labels = {t.get_text(): (t.get_position()[0], t.get_horizontalalignment()) for t in ax.texts}
    assert labels["-2.00"] == (pytest.approx(-2.01), "right") and labels["0.50"] == (pytest.approx(0.51), "left")
    assert labels["n/a"] == (pytest.approx(0.01), "left")


def test_lm_eval_bars_of_two_series_share_a_row_top_down_and_a_zero_score_is_labelled_past_it(tmp_path, drawn_figures):
    """Two series split each row's 0.8 between them: bars 0.4 high, centred 0.2 above and below the row (the
    model's first), rows read top down; a score of exactly 0 is labelled to the right of zero, at 0.01."""
    from slconvert.evaluation import plots

    rows = [{"task": "a", "metric": "acc", "tiny": 0.0, "src (source)": 0.5},
            {"task": "b", "metric": "acc", "tiny": 0.25, "src (source)": 0.75}]
    plots.lm_eval_bars(rows, tmp_path / "bars.png", "tiny", "src")
    ax = drawn_figures[0].axes[0]
    bars = [value for p in ax.patches for value in (p.get_y(), p.get_height(), p.get_width())]
    assert bars == pytest.approx([-0.4, 0.4, 0.0, 0.6, 0.4, 0.25, 0.0, 0.4, 0.5, 1.0, 0.4, 0.75])
    assert ax.yaxis_inverted()
    labels = {t.get_text(): (t.get_position()[0], t.get_horizontalalignment()) for t in ax.texts}
    assert labels["0.00"] == (pytest.approx(0.01), "left")
