"""The `lm_eval` command line with model "slconvert" registered and the shipped tasks on the include path.

lm-eval's own command line cannot load a converted checkpoint: the Superlinear attention must be
registered with transformers before the model is built, and lm-eval has no plugin hook for that.
This entry point imports the registration, adds `evals/tasks` to `--include_path` unless one is
given, and hands over to lm-eval unchanged:

    python -m slconvert.evaluation.lm_eval_cli --model slconvert \\
        --model_args pretrained=OUT,max_length=8192 --tasks slc_passkey \\
        --metadata '{"max_seq_lengths": [4096, 8192]}' --device cuda

`--model hf` keeps working for source checkpoints. Offline: hub access and nltk downloads are switched off.
lm-eval's command line indexes every task file it ships (some 15,000; 15-25 s on a laptop-class CPU) before it
reads `--tasks`; where every task named is found on the include path alone, the index is built from it alone.
"""

from __future__ import annotations

import sys

from .lmeval import no_downloads, offline_environment, register, shipped_tasks_dir


def named_tasks(args: list[str]) -> list[str]:
    """The task names given to `--tasks` (comma-separated, one or several flags); empty when any is a file,
    folder or pattern, which only lm-eval's own resolution handles."""
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--tasks"]
    values += [a.split("=", 1)[1] for a in args if a.startswith("--tasks=")]
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    if any(n.endswith((".yaml", ".yml")) or "/" in n or "*" in n for n in names):
        return []
    return names


def include_first(manager_class: type, names: list[str]) -> type:
    """`manager_class` (lm-eval's TaskManager) indexing the include path alone when it holds every name in `names`,
    and the built-in tasks too otherwise (or when no names are known)."""

    class IncludeFirst(manager_class):
        def __init__(self, *args, include_defaults: bool = True, **kwargs):
            super().__init__(*args, include_defaults=not names and include_defaults, **kwargs)
            if include_defaults and names and any(n not in self.all_tasks for n in names):
                super().__init__(*args, include_defaults=True, **kwargs)

    IncludeFirst.__name__ = IncludeFirst.__qualname__ = manager_class.__name__
    return IncludeFirst


def main(argv: list[str] | None = None) -> None:
    offline_environment()
    register()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in args and not any(a.startswith("--include_path=") for a in args):
        args += ["--include_path", str(shipped_tasks_dir())]
    sys.argv = ["lm_eval", *args]
    import lm_eval.tasks

    lm_eval.tasks.TaskManager = include_first(lm_eval.tasks.TaskManager, named_tasks(args))
    from lm_eval.__main__ import cli_evaluate

    from ..errors import friendly_errors

    with friendly_errors(), no_downloads():
        cli_evaluate()


if __name__ == "__main__":
    main()
