"""Batch driver for the sev-snp-measure 0.0.13 oracle.

Reads one JSON list of command-line arguments per line on stdin, runs
sevsnpmeasure.cli.main() with exactly those arguments (the real CLI: argparse,
precedence rules, error handling), and prints one JSON object per line:
{"code": exit code, "stdout": ..., "stderr": ...}. One process serves a whole
test, so hundreds of cases cost one interpreter start.
"""
import contextlib
import io
import json
import sys

from sevsnpmeasure import cli


def run(argv):
    sys.argv = ["sev-snp-measure"] + argv
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception as e:  # the reference crashed: it refuses the case
            code = 1
            err.write(f"{type(e).__name__}: {e}")
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main():
    real_stdout = sys.stdout
    for line in sys.stdin:
        result = run(json.loads(line))
        real_stdout.write(json.dumps(result) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    main()
