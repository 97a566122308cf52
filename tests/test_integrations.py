"""Lightning's ModelCheckpoint and Hugging Face's Trainer, unchanged, on top of a store."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import deltastore

from .conftest import assert_same

lightning = pytest.importorskip("lightning")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from deltastore.integrations.lightning import DeltastoreCheckpointIO, read_pointer  # noqa: E402


class Regression(lightning.LightningModule):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({"width": 8, "path": Path("data")})
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.05)
        return {
            "optimizer": optimizer,
            "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 3),
        }


def _loader() -> Any:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(data, batch_size=8)


def _trainer(tmp_path: Path, io: DeltastoreCheckpointIO, max_steps: int) -> Any:
    # Ranked by step (Lightning logs it with every save), so that which checkpoints are
    # kept does not depend on the losses' last bits.
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=2, monitor="step", mode="max"
    )
    return lightning.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        plugins=[io],
        callbacks=[checkpoint],
    )


def test_lightning_model_checkpoint_saves_ranks_removes_and_resumes(tmp_path: Path) -> None:
    warnings.filterwarnings("ignore", category=Warning, module="lightning")
    io = DeltastoreCheckpointIO(tmp_path / "store")
    trainer = _trainer(tmp_path, io, max_steps=20)
    model = Regression()
    trainer.fit(model, _loader())
    with deltastore.open(tmp_path / "store") as store:
        history = list(store.log("lightning"))
        assert [c.step for c in history] == [20, 15, 10, 5]  # every save kept in the store
        pointers = sorted((tmp_path / "ckpt").glob("*.ckpt"))
        assert len(pointers) == 2  # save_top_k=2: the others were removed
        tagged = {cid for name, (_, cid) in store.refs().items() if "/ckpt/" in name}
        assert tagged == {read_pointer(p)["checkpoint"] for p in pointers}
        newest = store.load("lightning")
        assert_same(newest["state_dict"], trainer.model.state_dict())
        assert newest["hyper_parameters"] == {"width": 8, "path": "data"}
    best = trainer.checkpoint_callback.best_model_path
    resumed = _trainer(tmp_path, DeltastoreCheckpointIO(tmp_path / "store"), max_steps=25)
    resumed.fit(Regression(), _loader(), ckpt_path=best)
    assert resumed.global_step == 25
    with deltastore.open(tmp_path / "store") as store:
        assert store.info("lightning").step == 25


def test_lightning_refuses_a_file_that_is_not_a_pointer(tmp_path: Path) -> None:
    stray = tmp_path / "model.ckpt"
    torch.save({"w": torch.ones(2)}, stray)
    io = DeltastoreCheckpointIO(tmp_path / "store")
    with pytest.raises(ValueError, match="not a deltastore pointer"):
        io.load_checkpoint(stray)
    io.teardown()


def test_huggingface_trainer_saves_into_the_store(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from deltastore.integrations.huggingface import DeltastoreCallback

    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": ids, "labels": ids} for ids in torch.randint(0, 50, (32, 16), generator=g)
    ]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=10,
        save_steps=5,
        logging_steps=5,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_total_limit=1,
        disable_tqdm=True,
    )
    callback = DeltastoreCallback(tmp_path / "store")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    assert len(callback.saved) == 2
    with deltastore.open(tmp_path / "store") as store:
        history = list(store.log("hf"))
        assert [c.step for c in history] == [10, 5]
        assert "loss" in history[0].metrics
        saved = store.load("hf")
        assert_same(dict(saved["model"]), dict(trainer.model.state_dict()))
        assert saved["trainer_state"]["global_step"] == 10
        assert set(saved["optimizer"]) == {"state", "param_groups"}
        json.dumps(saved["trainer_state"])  # plain data
