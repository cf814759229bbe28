"""``wanlora trial --profile`` sorts kernel time by kind; a kernel filed under the wrong kind would point the
speed work at the wrong place.  The names below are kernels the H200 trial profiled (BENCHMARKS §0b)."""

from wanlora.engine import step_profile

SEEN_ON_H200 = {
    "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x128_1x4x1_cga1x1x1_kernel0_0": "attention",
    "kernel_cutlass_kernel_flash_attncuteflash_fwd_sm90FlashAttentionForwardSm90_object_at_": "attention",
    "nvjet_sm90_tst_320x128_64x3_1x2_h_bz_coopB_NNT": "matmul",
    "nvjet_sm90_qqtst_128x152_128x6_1x2_h_bz_coopA_algo2_bias_TNT": "matmul",  # fp8 (_scaled_mm)
    "triton_red_fused__fused_rms_norm__fused_rms_norm_backward__to_copy_add_clone_copy_mul_neg_permute": "fused",
    "triton_poi_fused_add_gelu_gelu_backward_mul_view_1": "fused",
    "Memcpy DtoD (Device -> Device)": "copy",
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>": "other",
}


def test_kernels_seen_on_the_gpu_are_filed_under_their_kind() -> None:
    assert {n: step_profile.kind_of(n) for n in SEEN_ON_H200} == SEEN_ON_H200


def test_summary_adds_up_and_idle_is_what_the_device_did_not_run() -> None:
    rows = [("nvjet_sm90_tst_a", 300_000.0), ("nvjet_sm90_tst_a", 100_000.0), ("triton_poi_fused_x", 50_000.0),
            ("cudnn_generated_fort_native_sdpa_sm90_x", 500_000.0), ("zero", 0.0)]
    s = step_profile.summarize(rows, wall_s=1.0, top=2)
    assert s["kinds_s"] == {"attention": 0.5, "matmul": 0.4, "fused": 0.05}
    assert s["busy_s"] == 0.95 and s["idle_s"] == 0.05
    assert [t["name"] for t in s["top"]] == ["cudnn_generated_fort_native_sdpa_sm90_x", "nvjet_sm90_tst_a"]
    assert s["top"][1]["s"] == 0.4  # repeated kernels add up
