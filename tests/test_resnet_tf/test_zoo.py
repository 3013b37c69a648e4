"""The paper's numbers, pinned: parameters and multiply-adds per depth."""

import pytest

from resnet_tf import ResNet, build, count_macs, count_params, zoo

# Trainable parameters, 1000 classes, option B, no conv bias (torchvision's
# published counts for the same architectures).
IMAGENET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032,
                   101: 44_549_160, 152: 60_192_808}
# Table 1 multiply-adds at 224x224, x 1e9.
IMAGENET_MACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# Table 6 parameters (option A, 10 classes), x 1e6.
CIFAR_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}


@pytest.mark.parametrize("depth", sorted(IMAGENET_PARAMS))
def test_imagenet_params_and_macs_match_the_paper(depth):
    model = build(f"resnet{depth}", input_shape=(224, 224, 3))
    _, trainable = count_params(model)
    assert trainable == IMAGENET_PARAMS[depth]
    macs = count_macs(model) / 1e9
    assert macs == pytest.approx(IMAGENET_MACS[depth], rel=0.05)


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110,
                                   pytest.param(1202, marks=pytest.mark.slow)])
def test_cifar_params_match_table_6(depth):
    model = build(f"resnet{depth}", input_shape=(32, 32, 3))
    assert model.shortcut == "A" and model.classes == 10
    _, trainable = count_params(model)
    assert trainable / 1e6 == pytest.approx(CIFAR_PARAMS[depth], rel=0.02)


@pytest.mark.parametrize("depth,size", [(18, 224), (50, 224), (20, 32), (110, 32)])
def test_plain_twin_has_the_same_params_and_macs_as_option_a(depth, size):
    shape = (size, size, 3)
    residual = ResNet(depth, shortcut="A", input_shape=shape)
    plain = ResNet(depth, residual=False, input_shape=shape)
    assert count_params(plain) == count_params(residual)
    assert count_macs(plain) == count_macs(residual)
    assert not any("_add" in layer.name for layer in plain.layers)


def test_stride_placement_changes_macs_as_expected():
    # FACTS: 3.86G with the stride on the first 1x1, 4.09G on the 3x3.
    v1 = build("resnet50", input_shape=(224, 224, 3))
    v15 = build("resnet50", stride_on="3x3", input_shape=(224, 224, 3))
    assert count_macs(v1) / 1e9 == pytest.approx(3.86, abs=0.01)
    assert count_macs(v15) / 1e9 == pytest.approx(4.09, abs=0.01)
    assert count_params(v1) == count_params(v15)
    assert v1.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert v1.get_layer("conv3_block1_2_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_2_conv").strides == (2, 2)


def test_names_parse_and_list_every_architecture():
    names = zoo.architecture_names()
    assert len(names) == 22  # 5 ImageNet + 6 CIFAR depths, residual and plain
    assert zoo.parse_name("ResNet-50") == (50, True)
    assert zoo.parse_name("plain1202") == (1202, False)
    with pytest.raises(ValueError, match="'vgg16'"):
        zoo.parse_name("vgg16")


def test_stage_layout_of_both_families():
    r50 = zoo.stage_layout(50)
    assert r50.family == "imagenet" and r50.block == "bottleneck"
    assert [s[1] for s in r50.stages] == [3, 4, 6, 3]
    assert r50.total_stride == 32
    c = zoo.stage_layout(50, family="cifar")  # 6n + 2 with n = 8
    assert [s[1] for s in c.stages] == [8, 8, 8] and c.total_stride == 4


def test_strides_are_data_on_the_stage_layout():
    r18 = zoo.stage_layout(18)
    assert r18.levels == ("C2", "C3", "C4", "C5")
    assert [r18.stride(lv) for lv in r18.levels] == [4, 8, 16, 32]  # Table 1
    c = zoo.stage_layout(20)
    assert [c.stride(lv) for lv in c.levels] == [1, 2, 4]  # Sec. 4.2: 32, 16, 8 maps
    # Strides do not depend on depth or width.
    for depth in (34, 50, 152):
        assert zoo.stage_layout(depth, width=16).stride("C4") == zoo.stride_of("C4") == 16
    assert zoo.stride_of("C3", "cifar") == zoo.stage_layout(56).stride("C3") == 2
    with pytest.raises(ValueError, match=r"'C5'.*\['C2', 'C3', 'C4'\]"):
        c.stride("C5")
    with pytest.raises(ValueError, match="Unknown family"):
        zoo.stride_of("C4", "coco")


def test_width_scales_every_stage_and_the_stem():
    narrow = zoo.stage_layout(18, width=16)
    assert [s[2] for s in narrow.stages] == [16, 32, 64, 128]
    assert narrow.stem_filters == narrow.width == 16 and not narrow.is_default_width
    assert zoo.stage_layout(18).width == 64 and zoo.stage_layout(18).is_default_width
    assert zoo.stage_layout(18, width=64).is_default_width
    assert [s[2] for s in zoo.stage_layout(20, width=32).stages] == [32, 64, 128]
    assert zoo.stage_layout(20).stem_filters == 16
    assert zoo.display_name(18) == "ResNet-18"
    assert zoo.display_name(18, 16) == "ResNet-18 (width 16)"
    assert zoo.display_name(20, residual=False) == "plain-20"
    for bad in (0, -8, 2.5, True, "16"):
        with pytest.raises(ValueError, match="width must be a positive integer"):
            zoo.stage_layout(18, width=bad)


def test_count_macs_needs_a_fixed_input_size():
    with pytest.raises(ValueError, match="fixed input size"):
        count_macs(build("resnet20"))
