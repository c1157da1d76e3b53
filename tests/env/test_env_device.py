"""Device selection: a missing accelerator is a ConfigError at construction; CUDA runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_kwargs

from esper_env.env import EsperEnv
from esper_env.errors import ConfigError


def test_device_cuda_index_beyond_the_machine_is_a_config_error():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=rf"device='cuda:{n}' is not available"):
        EsperEnv(device=f"cuda:{n}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_device_cuda_without_cuda_names_the_value_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"device='cuda' is not available.*allowed: 'cpu'"):
        EsperEnv(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_episode_runs_with_data_and_model_on_the_gpu():
    env = EsperEnv(**tiny_kwargs(device="cuda", n_slots=2))
    obs, info = env.reset(seed=0)
    assert env.trainer.data.train_x.is_cuda
    assert all(p.is_cuda for p in env.trainer.model.parameters())
    done, rng = False, np.random.default_rng(0)
    while not done:
        action = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, reward, done, _, info = env.step(action)
        assert np.isfinite(obs).all() and np.isfinite(reward)
    assert 0.0 <= info["final_test_acc"] <= 100.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_cifar10_keeps_uint8_pixels_on_the_gpu_and_augments_there(tmp_path):
    from esper_env.nn.cifar import write_cifar10_folder

    root = write_cifar10_folder(tmp_path, train_per_batch=20, n_test=20, seed=0)
    env = EsperEnv(**tiny_kwargs(task="cifar10", data_root=str(root), device="cuda",
                                 batch_size=25))
    env.reset(seed=0)
    data = env.trainer.data
    assert data.train_x.is_cuda and data.train_x.dtype == torch.uint8 and data.mean.is_cuda
    aug = data.augmentation(8, torch.Generator().manual_seed(0))
    assert aug.is_cuda and data.prepare(data.train_x[:8], aug).is_cuda
    germ = next(i for i, ok in enumerate(env.action_masks()) if ok and i > 0)
    stages = []
    for action in [germ] + [0] * 6:
        *_, info = env.step(action)
        stages.append(info["stages"][0])
        assert np.isfinite(info["val_loss"])
    assert "BLENDING" in stages or "PROBATIONARY" in stages


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("blueprint", ["norm", "conv_heavy"])
def test_device_cuda_channels_last_trains_like_the_default_layout(tmp_path, blueprint):
    from esper_env.nn.cifar import write_cifar10_folder

    root = write_cifar10_folder(tmp_path, train_per_batch=20, n_test=20, seed=0)
    losses = []
    for channels_last in (False, True):
        env = EsperEnv(**tiny_kwargs(task="cifar10", data_root=str(root), device="cuda",
                                     batch_size=25, germination_gate=False,
                                     channels_last=channels_last))
        env.reset(seed=0)
        germinate = env.action_names.index(f"GERMINATE_{blueprint}@0")
        infos = [env.step(a)[4] for a in [germinate, 0, 0, 0]]
        model = env.trainer.model
        convs = [p for p in model.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs) \
            is channels_last
        losses.append([i["train_loss"] for i in infos] + [i["val_loss"] for i in infos])
    assert np.allclose(losses[0], losses[1], rtol=1e-3), losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("blueprint", ["flex_attention", "mlp"])
def test_device_cuda_tinytext_trains_transformer_seeds_on_the_gpu(blueprint):
    from esper_env.core.actions import Action, ActionKind

    env = EsperEnv(**tiny_kwargs(task="tinytext", block_size=16, n_embd=32, n_head=2,
                                 train_subset=64, batch_size=32, device="cuda"))
    if blueprint not in env.blueprints:
        pytest.skip(f"{blueprint} is not available in this torch")
    env.reset(seed=0)
    assert env.trainer.data.train_x.is_cuda
    env.step(env.codec.encode(Action(ActionKind.GERMINATE, 0, blueprint)))
    seed = env.trainer.model.slots[0].seed
    assert next(seed.parameters()).is_cuda
    before = [p.detach().clone() for p in seed.parameters()]
    for _ in range(5):
        *_, info = env.step(0)
        assert np.isfinite(info["val_perplexity"])
    assert any(not torch.equal(a, p) for a, p in zip(before, seed.parameters(), strict=True))
    if blueprint == "flex_attention":
        assert seed.flex_calls > 0  # on CUDA the FlexAttention kernel itself trains
