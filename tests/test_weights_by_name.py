"""Pretrained weights by name (issue 15): ``imagenet``, ``timm:<model>[.<tag>]``, ``torchvision:<Enum>.<member>``.

Nothing here reaches the network: every test runs with sockets refused, empty temporary library caches
(``TORCH_HOME``, the Hugging Face hub cache) and ``HF_HUB_OFFLINE``. torchvision downloads go through the
real torch hub code path from a ``file://`` URL of a generated state dict whose name carries its own sha256
prefix; timm loads through the real ``timm.create_model(pretrained=True)`` from a pre-filled hub cache.
"""
from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torchvision

from edgeseg.errors import CheckpointError, RecipeError
from edgeseg.models.checkpoint import ModelInfo
from edgeseg.models.registry import build_model, get_spec
from edgeseg.models.weights import load_arch_weights, load_weights, weights_name

from conftest import assert_refused, write_recipe

TV_SMALL = "torchvision:MobileNet_V3_Small_Weights.IMAGENET1K_V1"
MNV4 = "timm:mobilenetv4_conv_small.e2400_r224_in1k"


class NetworkUsed(Exception):
    """Raised by the socket guard: not an OSError, so no code under test can mistake it for being offline."""


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Refuse every socket, and point torch hub and the Hugging Face hub at empty caches, offline."""
    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"a test tried to reach the network: {args[:2]}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    caches = {"torch": tmp_path / "torch-home", "hf": tmp_path / "hf-hub"}
    monkeypatch.setenv("TORCH_HOME", str(caches["torch"]))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(caches["hf"]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: set the module's values too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(caches["hf"]))
    return caches


def _served_state_dict(folder: Path, stem: str, state: dict, hash_prefix: str | None = None) -> tuple[Path, str]:
    """Save ``state`` as ``<stem>-<sha256 prefix>.pth`` under ``folder`` (torch hub's naming); (file, file:// URL)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    prefix = hash_prefix or hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = tmp.rename(folder / f"{stem}-{prefix}.pth")
    return path, path.as_uri()


@pytest.fixture
def tv_small(monkeypatch, tmp_path):
    """torchvision's MobileNet_V3_Small ImageNet weights enum pointed at a generated file:// state dict."""
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    path, url = _served_state_dict(tmp_path / "served", "mobilenet_v3_small", state)
    weights = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    monkeypatch.setattr(weights.value, "url", url)
    return state, path, weights


def _lraspp_small():
    return build_model("lraspp_mobilenet_v3_small", num_classes=2), get_spec("lraspp_mobilenet_v3_small")


def test_torchvision_name_downloads_through_torch_hub_with_its_hash_check_and_caches(tv_small, offline):
    state, served, _ = tv_small
    model, spec = _lraspp_small()
    assert load_arch_weights(model, TV_SMALL, spec) == "features.* -> backbone.*"
    assert torch.equal(model.backbone["0"][0].weight, state["features.0.0.weight"])
    cached = offline["torch"] / "hub" / "checkpoints" / served.name
    assert cached.read_bytes() == served.read_bytes()
    served.unlink()  # the next run uses the cache
    again, _ = _lraspp_small()
    load_arch_weights(again, TV_SMALL, spec)
    assert torch.equal(again.backbone["3"].block[0][0].weight, state["features.3.block.0.0.weight"])


def test_imagenet_means_the_architectures_own_encoder_weights(tv_small):
    state, _, _ = tv_small
    model, spec = _lraspp_small()
    assert weights_name("imagenet", spec, {}) == TV_SMALL
    assert weights_name("imagenet", get_spec("lraspp_mobilenet_v3_large"), {}) == \
        "torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V1"
    assert weights_name("imagenet", get_spec("unet_mobilenet_v3_small"), {}) == "timm:mobilenetv3_small_075"
    assert weights_name("imagenet", get_spec("unet_mobilenet_v3_small"), {"width": 0.5}) == "timm:mobilenetv3_small_050"
    assert weights_name("imagenet", get_spec("unet_mobilenet_v3_small_minimal"), {}) == \
        "timm:tf_mobilenetv3_small_minimal_100"
    assert weights_name("imagenet", get_spec("unet_mobilenetv4_conv_small"), {}) == "timm:mobilenetv4_conv_small_050"
    assert weights_name("some/file.pth", spec, {}) == "some/file.pth"
    load_arch_weights(model, "imagenet", spec)
    assert torch.equal(model.backbone["0"][0].weight, state["features.0.0.weight"])
    with pytest.raises(RecipeError, match="width 1.0 only"):
        weights_name("imagenet", spec, {"width": 0.75})


def test_training_setup_loads_named_weights(tv_small):
    from edgeseg.train.setup import build_for_training

    state, _, _ = tv_small
    info = ModelInfo(name="t", arch="lraspp_mobilenet_v3_small", options={"width": 1.0, "inter_channels": 32},
                     classes=("background", "person"), input_size=(64, 64), mean=(0, 0, 0), std=(1, 1, 1))
    model = build_for_training(info, "imagenet")
    assert torch.equal(model.backbone["0"][0].weight, state["features.0.0.weight"])


def test_a_file_placed_by_hand_in_torch_hubs_cache_is_used_without_a_download(offline, tmp_path):
    real = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url  # the https URL, never fetched
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    cache = offline["torch"] / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / real.rsplit("/", 1)[1])
    model, spec = _lraspp_small()
    load_arch_weights(model, "imagenet", spec)
    assert torch.equal(model.backbone["0"][0].weight, state["features.0.0.weight"])


def test_a_download_that_fails_names_the_url_and_the_cache_folder(monkeypatch, tv_small, offline, cli, tmp_path):
    _, served, weights = tv_small
    missing = served.with_name("mobilenet_v3_small-0123abcd.pth")
    monkeypatch.setattr(weights.value, "url", missing.as_uri())
    cache = offline["torch"] / "hub" / "checkpoints"
    recipe = write_recipe(tmp_path / "r.yaml", {"model": {"arch": "lraspp_mobilenet_v3_small", "width": None,
                                                          "decoder_channels": None}})
    line = assert_refused(cli, "train", "--recipe", recipe, "--out", tmp_path / "run", "--weights", TV_SMALL,
                          match=f"could not download {missing.as_uri()}")
    assert str(cache) in line and missing.name in line
    assert not (cache / missing.name).exists()


def test_a_download_with_the_wrong_hash_is_refused_and_not_cached(monkeypatch, tv_small, offline, tmp_path):
    state, _, weights = tv_small
    _, url = _served_state_dict(tmp_path / "bad", "mobilenet_v3_small", state, hash_prefix="deadbeef")
    monkeypatch.setattr(weights.value, "url", url)
    model, spec = _lraspp_small()
    with pytest.raises(CheckpointError, match="does not match the sha256 prefix") as err:
        load_arch_weights(model, TV_SMALL, spec)
    assert "\n" not in str(err.value)
    assert not list((offline["torch"] / "hub" / "checkpoints").glob("*.pth"))


def test_timm_offline_with_an_empty_cache_exits_2_naming_the_hub_id_and_cache(cli, offline, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml")
    hf_cache = offline["hf"]
    hf_cache.mkdir()
    for weights, repo in ((MNV4, "timm/mobilenetv4_conv_small.e2400_r224_in1k"),
                          ("imagenet", "timm/mobilenetv3_small_050.lamb_in1k")):  # the tiny recipe's encoder
        line = assert_refused(cli, "train", "--recipe", recipe, "--out", tmp_path / "run", "--weights", weights,
                              watch=[hf_cache], match=repo)
        assert str(hf_cache) in line and "HF_HUB_OFFLINE" in line and f"https://huggingface.co/{repo}" in line
    assert "'imagenet' (timm:mobilenetv3_small_050)" in line


def _fill_hf_cache(cache: Path, repo: str, state: dict) -> None:
    """The Hugging Face hub cache layout for ``repo``'s ``main``: refs/main -> snapshots/<commit>/model.safetensors."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / commit / "model.safetensors"))


def test_timm_name_loads_through_timm_from_the_hub_cache(offline, cli, tmp_path):
    import timm

    state = timm.create_model("mobilenetv3_small_050", pretrained=False).state_dict()
    _fill_hf_cache(offline["hf"], "timm/mobilenetv3_small_050.lamb_in1k", state)
    spec = get_spec("unet_mobilenet_v3_small")
    for weights in ("imagenet", "timm:mobilenetv3_small_050", "timm:mobilenetv3_small_050.lamb_in1k"):
        model = build_model(spec.name, num_classes=2, width=0.5)
        assert load_arch_weights(model, weights, spec, {"width": 0.5}) == "<root>* -> encoder.*"
        assert torch.equal(model.encoder.conv_stem.weight, state["conv_stem.weight"])
    # through the CLI, one training step
    r = cli("train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", tmp_path / "run", "--weights", "imagenet",
            "--set", "train.steps_per_epoch=1", "--set", "data.synth_train=4", "--set", "data.synth_val=2")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("weights,match", [
    ("timm:nonexistent_model_xyz", "timm has no model 'nonexistent_model_xyz'"),
    ("timm:mobilenetv3_smal_050", "did you mean timm:mobilenetv3_small_050.lamb_in1k"),
    ("timm:mobilenetv4_conv_small.nope", "no pretrained tag 'nope' for mobilenetv4_conv_small"),
    ("timm:mobilenetv3_large_075", "no pretrained weights for mobilenetv3_large_075"),
    ("timm:hf-hub:timm/resnet18.a1_in1k", "timm has no model"),
    ("torchvision:NoSuch_Weights.X", "torchvision has no weights enum 'NoSuch_Weights'"),
    ("torchvision:MobileNet_V3_Large_Weights.NOPE", "has no member 'NOPE'; it has IMAGENET1K_V1"),
])
def test_an_unknown_name_exits_2_with_one_line(cli, tmp_path, weights, match):
    line = assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", tmp_path / "run",
                          "--weights", weights, match=match)
    assert f"model.weights '{weights}'" in line


def test_imagenet_at_a_width_without_published_weights_is_refused():
    spec = get_spec("unet_mobilenet_v3_large")
    with pytest.raises(RecipeError, match="'imagenet' \\(timm:mobilenetv3_large_075\\): timm has no pretrained weights"):
        load_arch_weights(build_model(spec.name, num_classes=2, width=0.75), "imagenet", spec, {"width": 0.75})


def test_named_weights_that_do_not_fit_name_the_weights(tv_small):
    spec = get_spec("lraspp_mobilenet_v3_large")
    with pytest.raises(CheckpointError, match=f"model.weights '{TV_SMALL}': weights do not fit"):
        load_weights(build_model(spec.name, num_classes=2), TV_SMALL, spec.weight_prefixes)


def test_a_local_file_still_loads_including_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    model, spec = _lraspp_small()
    torch.save(state, tmp_path / "w.pth")
    assert load_arch_weights(model, str(tmp_path / "w.pth"), spec) == "features.* -> backbone.*"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    again, _ = _lraspp_small()
    load_arch_weights(again, str(tmp_path / "w.safetensors"), spec)
    assert torch.equal(again.backbone["0"][0].weight, state["features.0.0.weight"])
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a readable safetensors file"):
        load_arch_weights(again, str(tmp_path / "bad.safetensors"), spec)
    shutil.copy(tmp_path / "w.pth", tmp_path / "imagenet")
    load_weights(again, tmp_path / "imagenet", spec.weight_prefixes)  # a Path is always a file


def test_building_and_training_setup_never_download(tmp_path):
    """No weights named, nothing fetched: the zoo builds random-init encoders (sockets are refused here)."""
    for name in ("unet_mobilenet_v3_small", "lraspp_mobilenet_v3_small"):
        build_model(name, num_classes=2)
    assert not (tmp_path / "torch-home").exists() and not (tmp_path / "hf-hub").exists()



def test_the_names_in_the_recipes_comments_resolve():
    """Every timm:/torchvision: name a recipe's comments show exists, and 'imagenet (= NAME)' is what it means."""
    import re

    import timm.models
    import yaml

    from edgeseg.recipe import load_recipe

    root = Path(__file__).resolve().parents[1] / "recipes"
    shown = 0
    for path in sorted(root.glob("*.yaml")):
        text = path.read_text()
        for name in re.findall(r"\b((?:timm|torchvision):[A-Za-z0-9_.]*[A-Za-z0-9_])", text):
            ref = name.split(":", 1)[1]
            if name.startswith("timm:"):
                assert timm.models.get_pretrained_cfg(ref).hf_hub_id, (path.name, name)
            else:
                assert torchvision.models.get_weight(ref).url, (path.name, name)
            shown += 1
        meant = re.search(r"imagenet\s*(?:#\s*)?\(= ((?:timm|torchvision):[A-Za-z0-9_.]+)", text)
        assert meant, f"{path.name}: its comments do not say what 'imagenet' loads"
        recipe = load_recipe(path)
        spec = get_spec(recipe.model.arch)
        resolved = weights_name("imagenet", spec, {**spec.options, **recipe.model.options()})
        if resolved.startswith("timm:"):
            cfg = timm.models.get_pretrained_cfg(resolved[len("timm:"):])
            resolved = f"timm:{cfg.architecture}.{cfg.tag}"
        assert meant.group(1) == resolved, path.name
        assert yaml.safe_load(text)["model"].get("weights") is None  # comments only: nothing downloads by default
    assert shown >= 4


def test_the_hubs_retry_warnings_do_not_come_before_the_one_line_error(caplog):
    """Offline, huggingface_hub logged "'[Errno -2] Name or service not known' thrown while requesting HEAD ..."
    and "Retrying in 8s" for each retry before edgeseg's error line (seen with a proxy on a closed port)."""
    import logging

    from edgeseg.compat import loggers_quiet_below_error

    caplog.set_level(logging.WARNING)
    hub = logging.getLogger("huggingface_hub.utils._http")
    with loggers_quiet_below_error("huggingface_hub"):
        hub.warning("'[Errno 111] Connection refused' thrown while requesting HEAD https://huggingface.co/x")
        hub.error("a real error")
    hub.warning("outside the download")
    assert caplog.messages == ["a real error", "outside the download"]
