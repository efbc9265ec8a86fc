"""`python -m streamseg.cli.torchrun [torchrun args] -m streamseg.cli.main ...`: torchrun with a short report.

torchrun (`torch.distributed.run`) ends a failed job with a ~55-line `ChildFailedError` traceback per
launch, which buries the one line that matters: a data or config error is found identically on every rank
and printed by rank 0 alone as `error: ...` (exit code 1). This wrapper runs torchrun's own `run()` and,
on a failure, prints one line per failed rank only when some rank ended otherwise than by that expected
exit code 1 (a crash, a signal, an OOM kill), then exits with the first failure's exit code (128 + signal
number for a rank killed by a signal, as a shell reports it). Used by `streamseg train --devices N` and
`tools/run_singlenode.sh` / `tools/run_multinode.sh`.
"""

from __future__ import annotations

import logging
import signal
import sys

# The exit code of an expected failure (`error: ...` printed by rank 0, see cli/train.py).
EXPECTED_ERROR_EXIT = 1


def _describe(rank: int, exitcode: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"rank {rank} was killed by {name} (exit code {exitcode})"
    return f"rank {rank} exited with code {exitcode}"


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # the agent's own "failed (exitcode: N) local_rank: ... of binary ..." line says what the summary
    # below says (or what rank 0's `error:` line already said)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv if argv is not None else sys.argv[1:]))
    except ChildFailedError as e:
        first_rank, first = e.get_first_failure()
        codes = {rank: f.exitcode for rank, f in sorted(e.failures.items())}
        if any(code != EXPECTED_ERROR_EXIT for code in codes.values()):
            lines = [_describe(rank, code) for rank, code in codes.items()]
            print("torchrun: " + "; ".join(lines) + f" (first: rank {first_rank})", file=sys.stderr, flush=True)
        return 128 - first.exitcode if first.exitcode < 0 else first.exitcode
    return 0


if __name__ == "__main__":
    sys.exit(main())
