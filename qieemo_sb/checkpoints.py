"""A SpeechBrain ``Checkpointer`` whose checkpoints appear whole or not at all.

SpeechBrain writes a checkpoint's ``CKPT.yaml`` first and its parameter files
after it, into the final folder. A run killed in between (Ctrl-C twice, a
pre-empted job, an out-of-memory kill) leaves a folder that looks complete,
and the next run's ``recover_if_possible`` fails on the truncated file it
picks: the run cannot resume from any of its checkpoints.
:class:`AtomicCheckpointer` writes each checkpoint into a hidden
``.partial-*`` folder and renames it when every file is written (a rename
within one file system is atomic), so an interrupted save loses only that
checkpoint.

Example
-------
>>> import tempfile, torch
>>> folder = tempfile.mkdtemp()
>>> model = torch.nn.Linear(2, 2)
>>> checkpointer = AtomicCheckpointer(folder, recoverables={"model": model})
>>> checkpoint = checkpointer.save_checkpoint(name="demo")
>>> checkpoint.path.name, sorted(p.name for p in checkpoint.path.iterdir())
('CKPT+demo', ['CKPT.yaml', 'model.ckpt'])
>>> checkpointer.find_checkpoint().path == checkpoint.path
True
"""

import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Optional

from speechbrain.utils.checkpoints import Checkpoint, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

PARTIAL_PREFIX = ".partial-"


class AtomicCheckpointer(Checkpointer):
    """``speechbrain.utils.checkpoints.Checkpointer`` with all-or-nothing saves.

    Takes the arguments of ``Checkpointer``; saving, finding, recovering and
    deleting checkpoints work as there. Leftover ``.partial-*`` folders of an
    interrupted save are removed by the next save.
    """

    def _new_checkpoint_dirpath(self) -> Path:
        return self._partial(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name: str) -> Path:
        return self._partial(super()._custom_checkpoint_dirpath(name))

    def _partial(self, final: Path) -> Path:
        self._final_path = final
        return final.with_name(PARTIAL_PREFIX + final.name)

    def save_checkpoint(
        self,
        meta: Optional[Dict] = None,
        end_of_epoch: bool = True,
        name: Optional[str] = None,
        verbosity: int = logging.INFO,
    ) -> Optional[Checkpoint]:
        """Saves a checkpoint (see ``Checkpointer.save_checkpoint``); it is
        listed only once all of its files are written."""
        if if_main_process():  # under torchrun the main process alone writes (and cleans up)
            for stale in Path(self.checkpoints_dir).glob(PARTIAL_PREFIX + "*"):
                shutil.rmtree(stale, ignore_errors=True)
        partial = super().save_checkpoint(
            meta={} if meta is None else meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity
        )
        checkpoint = None
        if partial is not None:  # None: not the main process, which alone writes
            final = self._final_path
            if final.exists():  # a custom name saved again replaces the old one
                shutil.rmtree(final)
            os.replace(partial.path, final)
            paramfiles = {key: final / path.name for key, path in partial.paramfiles.items()}
            checkpoint = Checkpoint(final, partial.meta, paramfiles)
        # Under torchrun the others list the checkpoints (which to keep) only
        # once this one is in place: all must agree on what is deleted.
        ddp_barrier()
        return checkpoint
