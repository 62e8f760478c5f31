"""Real training runs on real data (scikit-learn's digits) stopped by the NP rule, in Lightning and Hugging Face."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from digits import digits, digits_mlp
from torch import nn

import neural_persistence as npers

MAX_EPOCHS = 40


plain_rule_stop = npers.first_stop


class HFClassifier(nn.Module):
    """The digits MLP with the (inputs, labels) -> loss interface Hugging Face's Trainer expects."""

    def __init__(self) -> None:
        super().__init__()
        self.net = digits_mlp()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def hf_digits() -> list[dict[str, torch.Tensor]]:
    x, y = digits()
    return [{"x": a, "labels": b} for a, b in zip(x, y)]


def test_lightning_trainer_stops_by_np_rule(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from neural_persistence.training.lightning import NeuralPersistenceEarlyStopping

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = digits_mlp()

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    x, y = digits()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    callback = NeuralPersistenceEarlyStopping(patience=2, min_delta=0.005, burn_in=1)
    trainer = pl.Trainer(
        max_epochs=MAX_EPOCHS, callbacks=[callback], logger=CSVLogger(tmp_path), accelerator="cpu",
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
    )
    torch.manual_seed(0)
    trainer.fit(Classifier(), loader)
    assert callback.stopped_at is not None
    assert trainer.current_epoch < MAX_EPOCHS
    values = [c.value for c in callback.rule.history]
    assert len(values) == callback.stopped_at + 1
    assert plain_rule_stop(values, patience=2, min_delta=0.005, burn_in=1) == callback.stopped_at
    logged = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert "np/mean_normalized" in logged and "np/normalized/net.0" in logged
    assert logged["np/mean_normalized"].dropna().tolist() == values


def test_hugging_face_trainer_stops_by_np_rule(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    from neural_persistence.training.huggingface import NeuralPersistenceEarlyStoppingCallback

    data = hf_digits()
    callback = NeuralPersistenceEarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.005, burn_in=1)
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=MAX_EPOCHS, per_device_train_batch_size=64, learning_rate=3e-3,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=HFClassifier(), args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    rule = callback.rule
    assert rule.stopped_at is not None
    assert trainer.state.epoch < MAX_EPOCHS
    values = [c.value for c in rule.history]
    assert plain_rule_stop(values, patience=2, min_delta=0.005, burn_in=1) == rule.stopped_at
    logged = [h["np/mean_normalized"] for h in trainer.state.log_history if "np/mean_normalized" in h]
    assert logged == values


def test_plain_loop(tmp_path: Path) -> None:
    x, y = digits()
    model = digits_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    stopper = npers.EarlyStopping(patience=2, min_delta=0.005, burn_in=1, restore_best=True)
    for epoch in range(MAX_EPOCHS):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            optimizer.step()
        if stopper.step(model):
            break
    assert stopper.should_stop and epoch < MAX_EPOCHS - 1
    stopper.restore_best_weights(model)
    assert npers.compute(model).mean_normalized_np == stopper.best


def test_lightning_every_n_steps_checks_on_steps(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from neural_persistence.training.lightning import NeuralPersistenceEarlyStopping

    loader = digits_loader()
    callback = NeuralPersistenceEarlyStopping(patience=100, every_n_steps=10)
    trainer = pl.Trainer(max_epochs=2, callbacks=[callback], logger=False, accelerator="cpu",
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(lightning_classifier(), loader)
    assert trainer.global_step == 2 * len(loader)
    assert len(callback.rule.history) == trainer.global_step // 10
    assert callback.stopped_at is None


def test_hugging_face_checks_on_evaluate(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    from neural_persistence.training.huggingface import NeuralPersistenceEarlyStoppingCallback

    data = hf_digits()
    callback = NeuralPersistenceEarlyStoppingCallback(early_stopping_patience=100, check_on="evaluate")
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=64, eval_strategy="epoch",
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=HFClassifier(), args=args, train_dataset=data, eval_dataset=data[:200], callbacks=[callback])
    trainer.train()
    assert len(callback.rule.history) == 3  # one check per evaluation, none on epoch end
    assert callback.rule.stopped_at is None


def lightning_classifier(with_validation: bool = False):  # type: ignore[no-untyped-def]
    import lightning.pytorch as pl

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = digits_mlp()

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.1)

    if with_validation:
        def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            self.log("val_loss", nn.functional.cross_entropy(self.net(batch[0]), batch[1]))

        Classifier.validation_step = validation_step  # type: ignore[attr-defined]
    return Classifier()


def digits_loader() -> torch.utils.data.DataLoader:
    x, y = digits()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)


def test_lightning_with_gradient_accumulation_checks_each_optimizer_step_once(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from neural_persistence.training.lightning import NeuralPersistenceEarlyStopping

    class Steps(pl.Callback):  # the optimizer step of every check, as the trainer saw it
        seen: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            if len(callback.rule.history) > len(self.seen):
                self.seen.append(trainer.global_step)

    callback = NeuralPersistenceEarlyStopping(patience=100, every_n_steps=5)
    trainer = pl.Trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[callback, Steps()], logger=False,
                         accelerator="cpu", enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=2)
    loader = digits_loader()
    trainer.fit(lightning_classifier(with_validation=True), loader, loader)
    steps = Steps.seen
    assert trainer.global_step == 2 * (-(-len(loader) // 2))
    assert steps == list(range(5, trainer.global_step + 1, 5))  # each multiple of 5 once, none twice


def test_lightning_skips_the_sanity_check(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    from neural_persistence.training.lightning import NeuralPersistenceEarlyStopping

    callback = NeuralPersistenceEarlyStopping(patience=100)
    trainer = Trainer(max_epochs=2, callbacks=[callback], logger=False, accelerator="cpu", enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=2)
    loader = digits_loader()
    trainer.fit(lightning_classifier(with_validation=True), loader, loader)
    assert len(callback.rule.history) == 2  # one per epoch


def test_lightning_resumed_from_a_checkpoint_keeps_the_rule_and_the_best_weights(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from neural_persistence.training.lightning import NeuralPersistenceEarlyStopping

    def trainer(epochs: int, callback: NeuralPersistenceEarlyStopping) -> Trainer:
        return Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                       enable_model_summary=False, default_root_dir=tmp_path,
                       callbacks=[callback, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])

    torch.manual_seed(0)
    first = NeuralPersistenceEarlyStopping(patience=100, restore_best=True)
    trainer(3, first).fit(lightning_classifier(), digits_loader())  # interrupted after 3 epochs
    assert first.state_key in torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    second = NeuralPersistenceEarlyStopping(patience=100, restore_best=True)
    model = lightning_classifier()
    trainer(5, second).fit(model, digits_loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert [c.value for c in second.rule.history[:3]] == [c.value for c in first.rule.history]
    assert len(second.rule.history) == 5
    second.rule.restore_best_weights(model)  # a resumed run restores the best weights, wherever they were
    assert npers.compute(model).mean_normalized_np == second.rule.best


def test_hugging_face_resumed_from_a_checkpoint_goes_on_counting(tmp_path: Path) -> None:
    """With gradient accumulation 2; the second Trainer resumes from the first one's last checkpoint."""
    from transformers import Trainer, TrainingArguments

    from neural_persistence.training.huggingface import NeuralPersistenceEarlyStoppingCallback

    data = hf_digits()

    def trainer(epochs: int) -> tuple[Trainer, NeuralPersistenceEarlyStoppingCallback]:
        callback = NeuralPersistenceEarlyStoppingCallback(early_stopping_patience=100, burn_in=1)
        args = TrainingArguments(
            output_dir=str(tmp_path / "ckpt"), num_train_epochs=epochs, per_device_train_batch_size=32,
            gradient_accumulation_steps=2, report_to=[], save_strategy="epoch", logging_strategy="no", use_cpu=True,
            disable_tqdm=True, seed=0, restore_callback_states_from_checkpoint=True)
        return Trainer(model=HFClassifier(), args=args, train_dataset=data, callbacks=[callback]), callback

    first, first_callback = trainer(2)
    first.train()  # stopped after two epochs, as a killed run's last checkpoint would be
    assert len(first_callback.rule.history) == 2
    last = max((tmp_path / "ckpt").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    second, _ = trainer(4)
    second.train(resume_from_checkpoint=str(last))
    restored = next(c for c in second.callback_handler.callbacks
                    if isinstance(c, NeuralPersistenceEarlyStoppingCallback))
    assert len(restored.rule.history) == 4  # the two checks before the resume, then two more
    assert [c.value for c in restored.rule.history[:2]] == [c.value for c in first_callback.rule.history]
    assert restored.rule.burn_in == 1 and restored.rule.best == max(c.value for c in restored.rule.history[1:])
