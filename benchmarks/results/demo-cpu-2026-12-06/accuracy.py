"""The NIAH grid's average and cells of each run folder named (RUN/eval/niah_results.json)."""
import json
import sys

for run in sys.argv[1:]:
    table = json.load(open(f"{run}/eval/niah_results.json"))["table"]
    print(run, "average", table["average"], "cells (depth x length)", table["scores"])
