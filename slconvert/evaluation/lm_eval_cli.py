"""The `lm_eval` command line with model "slconvert" registered and the shipped tasks on the include path.

lm-eval's own command line cannot load a converted checkpoint: the Superlinear attention must be
registered with transformers before the model is built, and lm-eval has no plugin hook for that.
This entry point imports the registration, adds `evals/tasks` to `--include_path` unless one is
given, and hands over to lm-eval unchanged:

    python -m slconvert.evaluation.lm_eval_cli --model slconvert \\
        --model_args pretrained=OUT,max_length=8192 --tasks slc_passkey \\
        --metadata '{"max_seq_lengths": [4096, 8192]}' --device cuda

`--model hf` keeps working for source checkpoints. Offline: hub access and nltk downloads are switched off.
"""

from __future__ import annotations

import sys

from .lmeval import no_downloads, offline_environment, register, shipped_tasks_dir


def main(argv: list[str] | None = None) -> None:
    offline_environment()
    register()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in args and not any(a.startswith("--include_path=") for a in args):
        args += ["--include_path", str(shipped_tasks_dir())]
    sys.argv = ["lm_eval", *args]
    from lm_eval.__main__ import cli_evaluate

    from ..errors import friendly_errors

    with friendly_errors(), no_downloads():
        cli_evaluate()


if __name__ == "__main__":
    main()
