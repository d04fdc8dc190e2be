import pytest
import torch
from torch.func import functional_call

from image_cls.training.models import MODEL_NAMES, build_model

SHAPES = [(1, 28), (3, 32)]
FAST_MODELS = ["mlp", "lenet", "resnet8", "resnet20", "wrn-10-2"]


@pytest.mark.parametrize("in_channels,image_size", SHAPES)
@pytest.mark.parametrize("name", FAST_MODELS)
def test_every_model_maps_images_to_logits(name, in_channels, image_size):
    model = build_model(name, num_classes=7, in_channels=in_channels, image_size=image_size)
    logits = model(torch.randn(2, in_channels, image_size, image_size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_resnet32_and_wide_wrn_build():
    assert build_model("resnet32", 10, 3, 32)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    wrn = build_model("wrn-16-4", 100, 3, 32, dropout=0.3)
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in wrn.modules()) == 6


@pytest.mark.parametrize("name,expected", [("resnet8", 0.078e6), ("resnet20", 0.27e6), ("resnet32", 0.46e6)])
def test_resnet_parameter_counts_match_the_paper(name, expected):
    count = sum(p.numel() for p in build_model(name, 10, 3, 32).parameters())
    assert abs(count - expected) / expected < 0.05


def test_resnet_shortcuts_have_no_parameters():
    model = build_model("resnet20", 10, 3, 32)
    assert all("shortcut" not in name for name, _ in model.named_parameters())


def test_no_dropout_by_default():
    for name in FAST_MODELS:
        model = build_model(name, 10, 3, 32)
        assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_functional_call_uses_the_given_parameters():
    model = build_model("resnet8", 10, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    params = {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    out = functional_call(model, (params, buffers), (x,))
    torch.testing.assert_close(out, model(x))
    out.sum().backward()
    assert all(p.grad is not None for p in params.values())
    zeroed = {name: torch.zeros_like(p) for name, p in params.items()}
    assert torch.count_nonzero(functional_call(model, (zeroed, buffers), (x,))) == 0


@pytest.mark.parametrize("bad", ["resnet18", "wrn-15-2", "wrn-16", "vgg"])
def test_unknown_names_list_the_choices(bad):
    with pytest.raises(ValueError) as info:
        build_model(bad, 10, 3, 32)
    message = str(info.value)
    assert bad in message and "resnet20" in message and "\n" not in message


def test_bad_wrn_depth_is_explained():
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn-15-2", 10, 3, 32)


def test_dropout_outside_wide_resnets_is_refused():
    with pytest.raises(ValueError, match="Wide ResNets"):
        build_model("mlp", 10, 1, 28, dropout=0.5)


def test_model_names_lists_every_family():
    assert set(MODEL_NAMES) >= {"mlp", "lenet", "resnet8", "resnet20", "resnet32"}
    assert any(name.startswith("wrn-") for name in MODEL_NAMES)
