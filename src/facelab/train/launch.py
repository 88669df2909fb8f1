"""Starting several training processes on this machine (``facelab train ... --nproc N``): torchrun, once.

The command that asked for ``--nproc N`` checks everything it can first (:func:`~facelab.train.distributed.
check_nproc`, the config), then runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m facelab
ARGS``: torchrun picks a free port on localhost, starts the N processes with RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/MASTER_PORT set, and stops all of them when one fails. The processes run the same facelab command
(``ARGS``: the resolved config, so none of them resolves it again) and find their place from those variables.

Several machines need torchrun's rendezvous flags, so they are started by torchrun directly (docs/distributed.md).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The command that runs ``facelab ARGS`` in ``nproc`` processes on this machine (a free port on localhost)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "facelab", *map(str, args)]


def run_torchrun(nproc: int, args: Sequence[str]) -> int:
    """Run ``facelab ARGS`` in ``nproc`` processes and wait; returns torchrun's exit status.

    Progress and errors reach stderr as the processes write them; their stdout (rank 0's ``--json`` document)
    is passed on to this process's ``sys.stdout`` when they end, so whoever reads this command's stdout (a
    pipe, a test's runner) gets it.
    """
    done = subprocess.run(torchrun_command(nproc, args), stdout=subprocess.PIPE, text=True, check=False)
    sys.stdout.write(done.stdout)
    sys.stdout.flush()
    return done.returncode
