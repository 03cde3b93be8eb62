"""lm-eval on converted (and source) checkpoints: a guarded HFLM, its registration, and a runner.

lm-eval's HF wrapper silently cuts prompts from the left and guesses a 2048-token context when the
config is unclear; both have produced wrong long-context numbers. `SlconvertLM` always sets
`max_length` explicitly and refuses, with one clear line, any request that would be truncated.
It is registered with lm-eval as model "slconvert", loading converted checkpoints through
`slconvert.load` (which registers the attention first), so the same class serves the Python API
and the `lm_eval` command line (see `slconvert.evaluation.lm_eval_cli`).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ..errors import SlconvertError, first_line
from ..inputs import read_user_text

__all__ = ["register", "resolve_tasks", "check_tasks", "task_manager", "run_lm_eval", "shipped_tasks_dir",
           "offline_environment", "no_downloads", "RULER_OFFLINE", "RULER_ESSAY_TASKS", "with_ruler", "essay_files",
           "ruler_essay_haystack"]

MODEL_NAME = "slconvert"

# lm-eval's own RULER needle tasks whose haystack is built locally (repeated noise sentences or other needles):
# `slconvert eval --ruler` runs these, and their numbers sit beside published RULER tables.
RULER_OFFLINE = ("niah_single_1", "niah_multikey_2", "niah_multikey_3")
# lm-eval's RULER needle tasks whose haystack is Paul Graham's essays. lm-eval downloads them at run time; this
# tool reads them from a local folder of .txt files instead (`--ruler-essays DIR`, `ruler_essay_haystack`).
RULER_ESSAY_TASKS = ("niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery")
ESSAYS_HINT = ("save Paul Graham's essays as .txt files in a folder (e.g. the `text` rows of the hub data set "
               "baber/paul_graham_essays that lm-eval reads, one file each; see the README) and pass "
               "--ruler-essays DIR")
# RULER tasks whose data lm-eval downloads at run time, and what they read; this tool never downloads.
RULER_DOWNLOADS = {
    "ruler_qa_squad": "the SQuAD data set", "ruler_qa_hotpot": "the HotpotQA data set",
    "ruler_cwe": "the common-words lists", "ruler_fwe": "the frequent-words lists", "ruler_vt": "its word lists",
    "ruler": "the essays and QA data sets of several of its tasks",
}


def offline_environment() -> None:
    """No hub access during evaluation (every task builds its data locally), and no worker processes.

    lm-eval computes bootstrapped standard errors in a `multiprocessing` pool unless DISABLE_MULTIPROC is
    set; forking a process that already runs torch and tokenizer threads can leave a child stuck on a lock.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "DISABLE_MULTIPROC"):
        os.environ.setdefault(var, "1")


@contextlib.contextmanager
def no_downloads():
    """nltk downloads nothing while lm-eval runs.

    Importing lm-eval's RULER needle tasks asks nltk for its sentence splitter (`punkt_tab`) and downloads it
    when missing. Only the essay tasks use it, and `ruler_essay_haystack` gives them a splitter that needs no
    data when the model is not installed, so the request is answered "not available" instead of going to the
    network.
    """
    try:
        import nltk
    except ImportError:
        yield
        return
    saved = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = saved


def shipped_tasks_dir() -> Path:
    """The repository's `evals/tasks` folder (offline task YAMLs and their local data builders)."""
    env = os.environ.get("SLCONVERT_EVALS_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "evals"
    return root / "tasks"


def _ruler_tasks_dir() -> Path | None:
    """lm-eval's own RULER task folder, so that its tasks load without indexing every task lm-eval ships."""
    try:
        import lm_eval.tasks
    except ImportError:
        return None
    folder = Path(lm_eval.tasks.__file__).resolve().parent / "ruler"
    return folder if folder.is_dir() else None


def _make_class():
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

    @register_model(MODEL_NAME)
    class SlconvertLM(HFLM):
        """HFLM that loads converted checkpoints with `slconvert.load` and never truncates a request."""

        def __init__(self, pretrained, tokenizer=None, max_length=None, device=None, dtype=None, **kwargs):
            if isinstance(pretrained, (str, Path)):
                from .models import load_eval_model

                em = load_eval_model(pretrained, device=device, dtype=dtype,
                                     max_length=int(max_length) if max_length else None)
                pretrained, tokenizer = em.model, tokenizer or em.tokenizer
                max_length = em.max_length
            if not max_length:
                from .models import config_max_length

                max_length = config_max_length(pretrained.config)
            if not max_length:
                raise SlconvertError("the model declares no context length; pass max_length explicitly")
            super().__init__(pretrained=pretrained, tokenizer=tokenizer, max_length=int(max_length),
                             batch_size=kwargs.pop("batch_size", 1), **kwargs)

        def tok_batch_encode(self, strings, padding_side="left", left_truncate_len=None, truncation=False):
            ids, mask = super().tok_batch_encode(strings, padding_side=padding_side, left_truncate_len=None,
                                                 truncation=False)
            if left_truncate_len and ids.shape[1] > left_truncate_len:
                raise SlconvertError(
                    f"an lm-eval prompt has {ids.shape[1]} tokens but only {left_truncate_len} fit "
                    f"(max_length {self.max_length} minus the generation budget); raise max_length or use "
                    "shorter task lengths - prompts are never truncated")
            return ids, mask

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
            for _, context, continuation in requests:
                if len(context) + len(continuation) > self.max_length + 1:
                    raise SlconvertError(
                        f"an lm-eval request has {len(context) + len(continuation)} tokens, over max_length "
                        f"{self.max_length} + 1; raise max_length or use shorter task lengths - requests are "
                        "never truncated")
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

    return SlconvertLM


_CLASS = None


def __getattr__(name):  # lazy: importing lm_eval is slow and only some commands need it
    global _CLASS
    if name == "SlconvertLM":
        if _CLASS is None:
            _CLASS = _make_class()
        return _CLASS
    raise AttributeError(name)


def register() -> type:
    """Make model "slconvert" known to lm-eval (idempotent); returns the class."""
    return __getattr__("SlconvertLM")


def _task_yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: None)
    return Loader


def with_ruler(spec: str | None, essays: bool = False) -> str:
    """`--tasks` plus RULER's offline needle tasks (`--ruler`), each once; with essays=True also its essay tasks."""
    names = [t.strip() for t in (spec or "").split(",") if t.strip()]
    return ",".join(dict.fromkeys([*names, *RULER_OFFLINE, *(RULER_ESSAY_TASKS if essays else ())]))


def essay_files(folder: str | Path) -> list[Path]:
    """The .txt files under `folder` (its subfolders too), sorted by path: the essay haystack of RULER's tasks."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise SlconvertError(f"--ruler-essays {folder} is not a folder; {ESSAYS_HINT}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
    if not files:
        raise SlconvertError(f"--ruler-essays {folder} holds no .txt files; {ESSAYS_HINT}")
    return files


@contextlib.contextmanager
def ruler_essay_haystack(folder: str | Path):
    """lm-eval's RULER essay tasks read their haystack from `folder` and download nothing; yields what was used.

    lm-eval has no setting for either of the two things these tasks fetch, so both are swapped, for the duration
    of this block only, in the one module that holds them, `lm_eval.tasks.ruler.prepare_niah`:

    * `get_haystack("essay")` loads the hub data set baber/paul_graham_essays. Here it returns the folder's .txt
      files (`essay_files`) in the form lm-eval gives the data set's rows: joined with spaces, every run of
      whitespace folded to one space, split into words. The other haystack kinds stay lm-eval's. Each RULER task
      file runs its `niah_utils` module afresh when lm-eval loads the task, and that module takes `get_haystack`
      from `prepare_niah` at that moment, so tasks loaded inside this block read the folder.
    * `sent_tokenize` (needles go between sentences) needs nltk's `punkt_tab` English model, which nltk downloads
      when it is missing. An installed model is used, as in RULER. Without one, nltk's Punkt splitter runs with
      no trained parameters: it also breaks after abbreviations such as "Mr.", so a needle may land right after
      one.
    """
    files = essay_files(folder)
    texts = [read_user_text(f, "essay file", ESSAYS_HINT) for f in files]
    words = re.sub(r"\s+", " ", " ".join(texts)).split(" ")
    if not any(words):
        raise SlconvertError(f"the .txt files under --ruler-essays {folder} are empty; {ESSAYS_HINT}")
    try:
        import nltk

        with no_downloads():  # importing it asks nltk to download punkt_tab when missing
            from lm_eval.tasks.ruler import prepare_niah
    except ImportError as err:
        raise SlconvertError(f"lm-eval's RULER tasks cannot be loaded ({str(err).splitlines()[0]}); install the "
                             "`wonderwords` and `nltk` packages (pip install wonderwords nltk)") from err
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        splitter = None
    except LookupError:
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        splitter = PunktSentenceTokenizer().tokenize
    lm_eval_haystack, lm_eval_splitter = prepare_niah.get_haystack, prepare_niah.sent_tokenize

    def get_haystack(type_haystack):
        return list(words) if type_haystack == "essay" else lm_eval_haystack(type_haystack)

    prepare_niah.get_haystack = get_haystack
    if splitter is not None:
        prepare_niah.sent_tokenize = splitter
    try:
        yield {"folder": str(folder), "files": len(files), "words": sum(1 for w in words if w),
               "sentences": "nltk punkt_tab (english)" if splitter is None else "nltk Punkt, untrained (no punkt_tab)"}
    finally:
        prepare_niah.get_haystack, prepare_niah.sent_tokenize = lm_eval_haystack, lm_eval_splitter


def resolve_tasks(spec: str, essays: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Comma-separated task names or YAML paths -> (task names, extra include paths).

    A YAML path contributes its folder to lm-eval's include path and its `task:` name to the list. RULER's essay
    tasks need `essays`, a folder of .txt essays (see `ruler_essay_haystack`); it is refused when none asks for it.
    """
    import yaml

    names, include = [], [str(shipped_tasks_dir())]
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        path = Path(item).expanduser()
        if item.endswith((".yaml", ".yml")):
            if path.is_dir():
                raise SlconvertError(f"task file {path} is a directory; pass an lm-eval task YAML or a task name")
            if not path.is_file():
                raise SlconvertError(f"task file {path} does not exist; pass an lm-eval task YAML or a task name")
            fix = "pass an lm-eval task YAML or a task name"
            try:
                data = yaml.load(read_user_text(path, "task file", fix), Loader=_task_yaml_loader()) or {}
            except yaml.YAMLError as err:
                raise SlconvertError(f"task file {path} is not valid YAML ({getattr(err, 'problem', None) or err}); "
                                     "fix its syntax") from None
            if not isinstance(data, dict):
                raise SlconvertError(f"task file {path} is not a mapping of lm-eval task settings; {fix}")
            task = data.get("task")
            if not task:
                raise SlconvertError(f"{path} has no `task:` name; add one to the YAML")
            task = task if isinstance(task, list) else [task]
            if not all(isinstance(t, str) and t.strip() for t in task):
                raise SlconvertError(f"{path} has `task: {data['task']!r}`, which is no task name; write the task's "
                                     "name, e.g. task: my_task")
            names.extend(task)
            include.append(str(path.parent.resolve()))
        else:
            if item in RULER_DOWNLOADS:
                raise SlconvertError(
                    f"lm-eval task {item} downloads {RULER_DOWNLOADS[item]} at run time, which this tool never does; "
                    f"run the RULER tasks that build their data locally ({', '.join(RULER_OFFLINE)}, or --ruler)")
            if item in RULER_ESSAY_TASKS and essays is None:
                raise SlconvertError(f"lm-eval task {item} reads Paul Graham's essays, which this tool never "
                                     f"downloads: {ESSAYS_HINT}")
            if item in (*RULER_OFFLINE, *RULER_ESSAY_TASKS) and (ruler := _ruler_tasks_dir()) is not None:
                include.append(str(ruler))
            names.append(item)
    if not names:
        raise SlconvertError("--tasks is empty; name lm-eval tasks or YAML files, comma-separated")
    if essays is not None:
        if not any(n in RULER_ESSAY_TASKS for n in names):
            raise SlconvertError(f"--ruler-essays is read only by RULER's essay tasks "
                                 f"({', '.join(RULER_ESSAY_TASKS)}); add --ruler or name them in --tasks, or leave "
                                 "--ruler-essays out")
        essay_files(essays)
    return names, list(dict.fromkeys(include))


def task_manager(names: list[str], include: list[str], metadata: dict | None = None):
    """lm-eval's TaskManager for `names` (`resolve_tasks`' names and include path); an unknown name is refused in
    one line. Indexing lm-eval's thousands of built-in task files takes seconds: only done when a name needs it."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include, metadata=metadata, include_defaults=False)
    if any(n not in manager.all_tasks for n in names):
        manager = TaskManager(include_path=include, metadata=metadata)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise SlconvertError(f"unknown lm-eval task(s) {unknown}; shipped offline tasks: "
                             f"{', '.join(sorted(t for t in manager.all_tasks if t.startswith('slc_')))}")
    return manager


def check_tasks(spec: str, essays: str | Path | None = None) -> None:
    """Everything `run_lm_eval` refuses about `--tasks` and `--ruler-essays` before it needs a model (files, refused
    tasks, a missing essay folder, names lm-eval does not know), for a command to check before loading one."""
    offline_environment()
    names, include = resolve_tasks(spec, essays)
    with no_downloads():
        task_manager(names, include)


def run_lm_eval(em, spec: str, *, max_length: int, batch_size: int = 1, limit: int | None = None,
                seed: int = 0, task_lengths: list[int] | None = None, task_metadata: dict | None = None,
                log_samples: bool = False, essays: str | Path | None = None) -> dict:
    """Run lm-eval tasks on an already loaded model; returns lm-eval's result dict (JSON-safe parts).

    `essays`: a folder of .txt essays, the haystack of RULER's essay tasks (`ruler_essay_haystack`); the result
    then says what was read under "ruler_essays".
    """
    offline_environment()
    names, include = resolve_tasks(spec, essays)
    with no_downloads(), contextlib.ExitStack() as stack:
        used = stack.enter_context(ruler_essay_haystack(essays)) if essays is not None else None
        result = _run_lm_eval(em, names, include, max_length=max_length, batch_size=batch_size, limit=limit,
                              seed=seed, task_lengths=task_lengths, task_metadata=task_metadata,
                              log_samples=log_samples)
    return {**result, "ruler_essays": used} if used else result


def _run_lm_eval(em, names: list[str], include: list[str], *, max_length: int, batch_size: int, limit: int | None,
                 seed: int, task_lengths: list[int] | None, task_metadata: dict | None, log_samples: bool) -> dict:
    import lm_eval

    metadata = {"pretrained": str(em.path), "tokenizer": str(em.path), "max_length": max_length, "seed": seed,
                **(task_metadata or {})}
    if task_lengths:
        metadata["max_seq_lengths"] = list(task_lengths)
    manager = task_manager(names, include, metadata)
    lm = register()(pretrained=em.model, tokenizer=em.tokenizer, max_length=max_length, batch_size=batch_size)
    try:
        results = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit,
                                          log_samples=log_samples, random_seed=seed, numpy_random_seed=seed,
                                          torch_random_seed=seed, fewshot_random_seed=seed, metadata=metadata)
    except ValueError as err:
        if "max_seq_length" not in str(err):
            raise
        # RULER's prompt builders, at a length that leaves no room for the template, the needles and the answer
        raise SlconvertError(f"lm-eval cannot build the prompts of {', '.join(names)} at these lengths "
                             f"({str(err).split('. ')[0]}); use longer --task-lengths") from None
    except ConnectionError as err:  # `datasets` asked the hub for a task's data (offline_environment refuses it)
        raise SlconvertError(f"the data of lm-eval task(s) {', '.join(names)} is not on this machine "
                             f"({first_line(err)}) and this tool downloads nothing; point the task YAML's "
                             "dataset_path / dataset_kwargs at local files, or use a shipped slc_* task") from None
    if results is None:
        raise SlconvertError("lm-eval returned no results")
    return {key: results[key] for key in ("results", "versions", "n-shot", "higher_is_better", "n-samples")
            if key in results}
