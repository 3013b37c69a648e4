"""--precision auto: the decision (issue 21, part 2), the CLI default, and
what a trained directory records."""

import json

import pytest

from resnet_tf import precision

# /proc/cpuinfo excerpts of the machines benchmarks/RESULTS.md measured: a
# Sapphire Rapids core with AMX; a Sapphire Rapids VM that exposes AVX-512
# BF16 but no AMX (bfloat16 measured slower than float32 there); an AMD
# EPYC (Zen 4) core with AVX-512 BF16 (bfloat16 measured 1.5-1.7x faster);
# and an Ice Lake core with no bfloat16 instructions at all.
AMX_CPUINFO = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
               "model name\t: Intel(R) Xeon(R) Platinum 8488C\n"
               "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
               "bogomips\t: 4800.00\n")
NO_AMX_CPUINFO = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                  "model name\t: Intel(R) Xeon(R) Platinum 8488C\n"
                  "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_fp16 avx512_vnni\n")
AMD_BF16_CPUINFO = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
                    "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
NO_BF16_CPUINFO = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                   "model name\t: Intel(R) Xeon(R) Platinum 8375C\n"
                   "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")


def test_auto_takes_bfloat16_on_amx_and_float32_on_a_cpu_without_it():
    policy, reason = precision.choose_precision(AMX_CPUINFO, [])
    assert policy == "mixed_bfloat16" and "AMX" in reason
    policy, reason = precision.choose_precision(NO_AMX_CPUINFO, [])
    assert policy == "float32" and "no amx_bf16" in reason
    # No readable flags (another OS): the safe choice.
    assert precision.choose_precision(None, [])[0] == "float32"
    assert precision.choose_precision("processor\t: 0\n", [])[0] == "float32"


def test_auto_follows_the_measured_cpus_without_amx():
    """AVX-512 BF16 without AMX: bfloat16 on AMD (measured faster), float32
    on Intel (measured slower); no bfloat16 instructions: float32."""
    policy, reason = precision.choose_precision(AMD_BF16_CPUINFO, [])
    assert policy == "mixed_bfloat16" and "AMD" in reason and "avx512_bf16" in reason
    policy, reason = precision.choose_precision(NO_AMX_CPUINFO, [])
    assert policy == "float32" and "Intel" in reason
    assert precision.choose_precision(NO_BF16_CPUINFO, [])[0] == "float32"
    # The vendor decides: the same flags from an unknown vendor are float32.
    unknown = AMD_BF16_CPUINFO.replace("vendor_id\t: AuthenticAMD\n", "")
    assert precision.choose_precision(unknown, [])[0] == "float32"
    assert precision.parse_cpu_vendor(AMD_BF16_CPUINFO) == "AuthenticAMD"
    assert precision.parse_cpu_vendor("flags\t: avx2\n") is None
    # The slow-bfloat16 warning follows the same rule.
    amd = precision.parse_cpu_flags(AMD_BF16_CPUINFO)
    assert precision.slow_bfloat16_reason("mixed_bfloat16", amd, False, "AuthenticAMD") is None
    assert precision.slow_bfloat16_reason("mixed_bfloat16", amd, False, "GenuineIntel")


def test_auto_takes_bfloat16_on_a_gpu_with_bfloat16_tensor_cores():
    for gpus in ([("NVIDIA H100", (9, 0))], [("NVIDIA A10G", (8, 6))], [("GPU:0", None)]):
        policy, reason = precision.choose_precision(NO_AMX_CPUINFO, gpus)
        assert policy == "mixed_bfloat16" and gpus[0][0] in reason, gpus
    # A V100 (7.0) has float16 tensor cores but no bfloat16 ones.
    policy, reason = precision.choose_precision(AMX_CPUINFO, [("Tesla V100", (7, 0))])
    assert policy == "float32" and "Tesla V100 (compute capability 7.0)" in reason


def test_resolve_reads_the_machine_for_auto_only(monkeypatch):
    monkeypatch.setattr(precision, "_visible_gpus", lambda: [])
    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: AMX_CPUINFO)
    assert precision.resolve_precision("auto")[0] == "mixed_bfloat16"
    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: NO_AMX_CPUINFO)
    assert precision.resolve_precision("auto")[0] == "float32"
    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: AMD_BF16_CPUINFO)
    assert precision.resolve_precision("auto")[0] == "mixed_bfloat16"
    assert precision.resolve_precision("mixed_bfloat16") == ("mixed_bfloat16", None)
    with pytest.raises(ValueError, match="--precision: unknown precision 'bf16'.*auto"):
        precision.resolve_precision("bf16")


def test_every_train_command_defaults_to_auto():
    from apps import cli

    parser = cli.build_parser()
    for task, extra in (("classifier", ["--config", "cifar", "--model", "resnet8"]),
                        ("detector", []), ("localizer", ["--init-from", "clf"])):
        args = parser.parse_args(["train", task, "--data", "synthetic", "--out", "x", *extra])
        assert args.policy == "auto", task
        explicit = parser.parse_args(["train", task, "--data", "synthetic", "--out", "x",
                                      "--precision", "float32", *extra])
        assert explicit.policy == "float32", task


def test_a_trained_directory_records_the_request_and_the_policy_used(tmp_path, capsys,
                                                                     monkeypatch):
    """The classifier through the CLI on a faked AMX machine (mixed_bfloat16),
    the detector on a faked CPU without AMX (float32): both resolve "auto" in
    the one training run they share, print it, and record it."""
    from apps import cli

    monkeypatch.setattr(precision, "_visible_gpus", lambda: [])
    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: AMX_CPUINFO)
    out = str(tmp_path / "clf")
    assert cli.main(["train", "classifier", "--config", "cifar", "--model", "resnet8",
                     "--width", "4", "--data", "synthetic", "--synthetic-train", "24",
                     "--iterations", "1", "--batch-size", "8",
                     "--out", out, "--json"]) == 0
    printed = capsys.readouterr().out
    assert "Precision: auto -> mixed_bfloat16 (no GPU; the CPU has AMX" in printed
    meta = json.load(open(f"{out}/resnet_tf.json"))
    assert meta["policy"] == "mixed_bfloat16"  # what the loaders build under
    assert meta["training"]["policy"] == "mixed_bfloat16"
    assert meta["training"]["requested_policy"] == "auto"
    assert "amx_bf16" in meta["training"]["policy_reason"]

    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: NO_AMX_CPUINFO)
    out = str(tmp_path / "det")
    assert cli.main(["train", "detector", "--data", "synthetic", "--depth", "18",
                     "--iterations", "1", "--batch-size", "2", "--shorter-side", "64",
                     "--max-side", "64", "--anchor-scales", "16,32", "--roi-batch", "8",
                     "--rpn-batch", "16", "--pooled-size", "4", "--synthetic-train", "2",
                     "--synthetic-eval", "2", "--out", out, "--json"]) == 0
    assert "Precision: auto -> float32 (no GPU, and the CPU has no AMX" in \
        capsys.readouterr().out
    meta = json.load(open(f"{out}/resnet_tf.json"))
    assert meta["policy"] == "float32"
    assert (meta["training"]["policy"], meta["training"]["requested_policy"]) == \
        ("float32", "auto")

    # An explicit policy is recorded as asked, with no reason.
    from resnet_tf.runner import TrainingRun

    record = TrainingRun(str(tmp_path / "r"), policy="float32").record(data="x")
    assert (record["policy"], record["requested_policy"]) == ("float32", "float32")
    assert "policy_reason" not in record and "Precision:" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown precision 'float64'"):
        TrainingRun(str(tmp_path / "r"), policy="float64")
