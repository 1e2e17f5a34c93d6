"""Checkpoints are listed only once every file of them is written."""

import pytest
import torch

from qieemo_sb.checkpoints import AtomicCheckpointer


class Interrupted(Exception):
    pass


def test_an_interrupted_save_leaves_the_previous_checkpoint_to_recover(tmp_path):
    model = torch.nn.Linear(3, 3)
    state = {"fail": False}

    def save_or_die(obj, path):
        if state["fail"]:
            path.write_bytes(b"trunc")  # what a kill mid-write leaves
            raise Interrupted
        torch.save(obj.state_dict(), path)

    def load(obj, path, end_of_epoch):
        obj.load_state_dict(torch.load(path))

    checkpointer = AtomicCheckpointer(
        tmp_path, recoverables={"model": model},
        custom_save_hooks={"model": save_or_die}, custom_load_hooks={"model": load},
    )
    first = checkpointer.save_checkpoint(meta={"step": 1})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    state["fail"] = True
    with pytest.raises(Interrupted):
        checkpointer.save_checkpoint(meta={"step": 2})
    assert [c.path for c in checkpointer.list_checkpoints()] == [first.path]
    assert len(list(tmp_path.glob(".partial-*"))) == 1

    checkpointer.recover_if_possible()  # SpeechBrain's Checkpointer would pick the truncated one
    torch.testing.assert_close(model.weight, saved["weight"])

    state["fail"] = False
    second = checkpointer.save_checkpoint(meta={"step": 3})
    assert not list(tmp_path.glob(".partial-*"))
    assert sorted(c.meta["step"] for c in checkpointer.list_checkpoints()) == [1, 3]
    assert (second.path / "model.ckpt").is_file() and second.paramfiles["model"] == second.path / "model.ckpt"
