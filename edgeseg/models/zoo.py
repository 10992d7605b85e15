"""The built-in architectures (``builtin_specs``; the registry registers them on its first lookup)."""
from __future__ import annotations

from functools import partial

from edgeseg.errors import RecipeError
from edgeseg.models.lraspp import build_lraspp
from edgeseg.models.spec import ArchSpec
from edgeseg.models.unet import UNetSegmenter

# timm encoder variant per width multiplier
_TIMM_WIDTHS = {
    "mobilenetv3_small": {0.5: "mobilenetv3_small_050", 0.75: "mobilenetv3_small_075", 1.0: "mobilenetv3_small_100"},
    "mobilenetv3_large": {0.75: "mobilenetv3_large_075", 1.0: "mobilenetv3_large_100"},
    "mobilenetv4_conv_small": {0.35: "mobilenetv4_conv_small_035", 0.5: "mobilenetv4_conv_small_050", 1.0: "mobilenetv4_conv_small"},
    "mobilenetv3_small_minimal": {1.0: "tf_mobilenetv3_small_minimal_100"},
}
# widths timm publishes no model for, built with timm's own generator at that channel multiplier (no
# ImageNet weights): MobileNetV4-Conv-Small between 0.5 and 1.0, where ONNX Runtime's int8 starts to pay
# on x86 (benchmarks/results/speed_map_x86_64-2core.md)
_GENERATED_WIDTHS = {"mobilenetv4_conv_small": (0.625, 0.75)}
# extra timm create_model arguments per family: the TF-ported minimal model defaults to TF "same"
# padding (asymmetric, computed per input); symmetric padding like every other encoder here
_TIMM_KWARGS = {"mobilenetv3_small_minimal": {"pad_type": ""}}


def timm_encoder_name(family: str, width: float) -> str:
    """The timm model name for an encoder family at a width multiplier timm publishes (ImageNet weights)."""
    widths = _TIMM_WIDTHS[family]
    generated = _GENERATED_WIDTHS.get(family, ())
    if width in generated:
        raise RecipeError(f"timm publishes no {family} weights at model.width {width} (only at {sorted(widths)}); "
                          "train it from scratch (model.weights null), or choose one of those widths")
    if width not in widths:
        extra = f" (or {', '.join(map(str, generated))}, without ImageNet weights)" if generated else ""
        raise RecipeError(f"model.width {width} is not available for {family}; choose one of {sorted(widths)}{extra}")
    return widths[width]


def _encoder(family: str, width: float):
    """A timm features_only encoder: a published variant, or timm's generator at a ``_GENERATED_WIDTHS`` width."""
    import timm

    if width in _GENERATED_WIDTHS.get(family, ()):
        from timm.models import mobilenetv3  # the generator behind timm's mobilenetv4_conv_small_* models

        return mobilenetv3._gen_mobilenet_v4(family, width, pretrained=False, features_only=True)
    return timm.create_model(timm_encoder_name(family, width), pretrained=False, features_only=True,
                             **_TIMM_KWARGS.get(family, {}))


def build_unet(family: str, *, num_classes: int, width: float, decoder_channels) -> UNetSegmenter:
    """U-Net decoder over a timm features_only encoder (random init; weights load from a file)."""
    encoder = _encoder(family, width)
    return UNetSegmenter(encoder, encoder.feature_info.channels(), tuple(decoder_channels), num_classes)


_TIMM_PREFIX = (("", "encoder."),)  # timm classification checkpoint -> encoder
_TV_PREFIX = (("features.", "backbone."),)  # torchvision ImageNet MobileNetV3 -> LR-ASPP backbone


def timm_imagenet(family: str, options: dict) -> str:
    """model.weights 'imagenet' for a U-Net: the encoder's timm model at its width, timm's default pretrained tag."""
    return f"timm:{timm_encoder_name(family, options['width'])}"


def torchvision_imagenet(variant: str, options: dict) -> str:
    """model.weights 'imagenet' for LR-ASPP: torchvision's ImageNet MobileNetV3 (published at width 1.0 only)."""
    if options["width"] != 1.0:
        raise RecipeError(f"model.weights 'imagenet': torchvision publishes ImageNet MobileNetV3-{variant.title()} "
                          f"weights for width 1.0 only, and model.width is {options['width']}; set model.width=1.0 "
                          "or give a weights file")
    return f"torchvision:MobileNet_V3_{variant.title()}_Weights.IMAGENET1K_V1"


def builtin_specs() -> list[ArchSpec]:
    """Every built-in architecture's spec."""
    unet_options = {"width": 1.0, "decoder_channels": (64, 48, 32, 16)}
    specs = []
    specs.append(ArchSpec(
        "unet_mobilenet_v3_small", partial(build_unet, "mobilenetv3_small"), (256, 256), 32,
        "U-Net skips over timm MobileNetV3-Small (crisp portrait edges)",
        options={**unet_options, "width": 0.75, "decoder_channels": (48, 32, 24, 16)}, weight_prefixes=_TIMM_PREFIX,
        imagenet_weights=partial(timm_imagenet, "mobilenetv3_small"),
    ))
    specs.append(ArchSpec(
        "unet_mobilenetv4_conv_small", partial(build_unet, "mobilenetv4_conv_small"), (256, 256), 32,
        "U-Net skips over timm MobileNetV4-Conv-Small",
        options={**unet_options, "width": 0.5, "decoder_channels": (48, 32, 24, 16)}, weight_prefixes=_TIMM_PREFIX,
        imagenet_weights=partial(timm_imagenet, "mobilenetv4_conv_small"),
    ))
    specs.append(ArchSpec(
        "unet_mobilenet_v3_small_minimal", partial(build_unet, "mobilenetv3_small_minimal"), (256, 256), 32,
        "U-Net skips over timm MobileNetV3-Small-Minimal (ReLU, no squeeze-excite: all-integer int8), head at "
        "stride 2: the default model's architecture",
        options={**unet_options, "decoder_channels": (48, 32, 24, 16)}, weight_prefixes=_TIMM_PREFIX,
        imagenet_weights=partial(timm_imagenet, "mobilenetv3_small_minimal"),
    ))
    specs.append(ArchSpec(
        "unet_mobilenet_v3_large", partial(build_unet, "mobilenetv3_large"), (256, 256), 32,
        "U-Net skips over timm MobileNetV3-Large",
        options=unet_options, weight_prefixes=_TIMM_PREFIX,
        imagenet_weights=partial(timm_imagenet, "mobilenetv3_large"),
    ))
    lraspp_options = {"width": 1.0, "inter_channels": 128}
    specs.append(ArchSpec(
        "lraspp_mobilenet_v3_large", partial(build_lraspp, "large"), (512, 512), 16,
        "torchvision LR-ASPP MobileNetV3-Large (loads torchvision COCO-VOC / ImageNet weights)",
        options=lraspp_options, weight_prefixes=_TV_PREFIX, imagenet_weights=partial(torchvision_imagenet, "large"),
    ))
    specs.append(ArchSpec(
        "lraspp_mobilenet_v3_small", partial(build_lraspp, "small"), (512, 512), 16,
        "torchvision LR-ASPP MobileNetV3-Small (loads torchvision ImageNet weights)",
        options=lraspp_options, weight_prefixes=_TV_PREFIX, imagenet_weights=partial(torchvision_imagenet, "small"),
    ))
    return specs
