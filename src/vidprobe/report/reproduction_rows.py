"""The rows of the reproduction ledger (see :mod:`vidprobe.report.reproduction`).

Each row: (published model or ``all``, area, setting, the release's value, vidprobe's value in reference mode /
the paper config, status, proving test or reason). Keep the tests named here real: tests/test_reproduction.py
checks that each exists.
"""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("identical", "deviation", "unknown")
ALL = "all"  # rows shared by every published model (probe, training, metrics, labels)


@dataclass(frozen=True)
class Setting:
    row: str  # published model name (report/published.py, e.g. "WAN2.1-14B") or ALL
    area: str  # frames, resize, normalisation, conditioning, VAE, scheduler, block, dtype, labels, probe, ...
    setting: str
    release: str
    vidprobe: str
    status: str
    test: str | None = None  # tests/<file>.py::<test function>, required for "identical"
    reason: str = ""  # required for "deviation" and "unknown"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Setting {self.setting!r}: status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "identical" and not self.test:
            raise ValueError(f"Setting {self.setting!r} ({self.row}): an identical row must name its test")
        if self.status != "identical" and not self.reason:
            raise ValueError(f"Setting {self.setting!r} ({self.row}): a {self.status} row must give its reason")


_PV = "tests/test_parity_vggt.py"

LABEL_ROWS = [
    Setting(ALL, "labels", "VGGT-1B aggregator", "upstream VGGT aggregator (DINOv2 ViT-L patch embed, 24 frame/global blocks)",
            "own implementation, official tensor names, strict load", "identical",
            f"{_PV}::test_output_matches_upstream"),
    Setting(ALL, "labels", "VGGT camera head", "4 refinement iterations, pose encoding of the last",
            "same", "identical", f"{_PV}::test_output_matches_upstream"),
    Setting(ALL, "labels", "VGGT DPT depth / point heads", "ResidualConvUnit with in-place ReLU: the skip adds relu(x)",
            "relu(x) (was raw x: depth 53%, points 68% median relative difference)", "identical",
            f"{_PV}::test_raw_x_skip_in_residual_conv_unit_would_fail"),
    Setting(ALL, "labels", "label confidence", "depth_conf of the depth head", "depth_conf", "identical",
            f"{_PV}::test_labeler_depth_and_confidence_are_the_heads"),
    Setting(ALL, "labels", "stored points", "depth unprojected with the predicted cameras",
            "depth unprojected (default `--points-from depth`; `point_head` optional)", "identical",
            f"{_PV}::test_output_matches_upstream"),
    Setting(ALL, "labels", "cameras from pose encoding", "pose_encoding_to_extri_intri (fp32)",
            "decode in fp64, stored fp32 (agree to 6e-8)", "identical", f"{_PV}::test_output_matches_upstream"),
    Setting(ALL, "labels", "labeler dtype", "aggregator under bf16 autocast on CUDA, heads fp32, token concat promotes to fp32",
            "same (checked under CPU autocast; CUDA autocast unverified: no GPU)", "identical",
            f"{_PV}::test_bf16_autocast_matches_upstream"),
    Setting(ALL, "labels", "labeler heads dtype", "fp32 (autocast disabled)", "fp32", "identical",
            f"{_PV}::test_bf16_labeler_runs_the_heads_in_fp32"),
    Setting(ALL, "labels", "labeler resize", "PIL bicubic on 8-bit images to width 518, height round(H*518/W/14)*14, centre crop",
            "same", "identical", f"{_PV}::test_preprocess_matches_release_load_and_preprocess_images"),
    Setting(ALL, "labels", "degenerate field of view", "not clamped", "clamped to [1e-4, pi-1e-4]", "deviation",
            reason="only degenerate predictions are affected; avoids infinite or negative focal lengths"),
    Setting(ALL, "labels", "invalid predicted depth", "stored as predicted", "non-finite or <= 0 -> 0 and valid=False",
            "deviation", reason="only degenerate predictions are affected; keeps NaN out of the ground truth"),
    Setting(ALL, "labels", "DL3DV label window", "150 frames from a random, unseeded start", "first 150 frames",
            "deviation", reason="reproducible; the release's start cannot be reproduced (unseeded)"),
    Setting(ALL, "labels", "RGBA frames", "alpha composited on white", "alpha dropped", "unknown",
            reason="neither CO3Dv2 nor DL3DV frames have alpha, so it should not matter; not checked"),
]

_VJ = "tests/test_parity_vjepa.py"
_F3 = "tests/test_parity_fast3r.py"
_ENC = "tests/test_backbones_encoders.py"
_PC = "tests/test_paper_configs.py"

VJEPA_ROWS = [
    Setting("V-JEPA", "frames", "frame layout", "76 frames as 5 clips [0, i, i+5, ...] of 16, each starting with frame 0",
            "same (interleaved 5 x 16)", "identical", f"{_VJ}::test_reference_layout_76_frames_5_clips"),
    Setting("V-JEPA", "resize", "resize kernel", "torchvision Resize((480, 832)) on PIL images = PIL bilinear",
            "`resize: pil-bilinear`", "identical", f"{_VJ}::test_resize_normalisation_and_clips_match_the_release"),
    Setting("V-JEPA", "normalisation", "normalisation", "ImageNet mean/std", "same", "identical",
            f"{_VJ}::test_resize_normalisation_and_clips_match_the_release"),
    Setting("V-JEPA", "block", "tensor read", "last block BEFORE the final LayerNorm (its norm lines are commented out)",
            "`layers: [32]` (1-based block output; -1 would be after the norm)", "identical",
            f"{_VJ}::test_every_block_output_matches"),
    Setting("V-JEPA", "weights", "checkpoint entry", 'checkpoint["encoder"], `module.backbone.` stripped',
            "`checkpoint_key: encoder` (default elsewhere `target_encoder`)", "identical",
            f"{_VJ}::test_loader_takes_the_release_checkpoint_entry"),
    Setting("V-JEPA", "dtype", "compute dtype", "fp32", "`dtype: fp32`", "identical",
            f"{_VJ}::test_extract_reads_what_the_release_saves"),
    Setting("V-JEPA", "block", "position table at 480x832", "trilinear resize by scale factor", "trilinear resize to size",
            "identical", f"{_VJ}::test_every_block_output_matches"),
]

DINO_ROWS = [
    Setting("DINOv2", "frames", "frames", "each frame alone", "each frame alone (frames 0..76, all the sampler draws)",
            "identical", f"{_ENC}::test_dinov2_matches_hidden_states"),
    Setting("DINOv2", "resize", "resize + normalisation", "PIL bicubic to 728x420, rescale 1/255, ImageNet mean/std",
            "`resize: pil-bicubic`, same normalisation", "identical",
            f"{_ENC}::test_dinov2_release_preprocessing_pil_bicubic"),
    Setting("DINOv2", "block", "tensor read", "`last_hidden_state` without CLS (dinov2-large has no registers)",
            "layer -1", "identical", f"{_ENC}::test_dinov2_matches_hidden_states"),
    Setting("DINOv2", "dtype", "compute dtype", "fp32", "`dtype: fp32`", "identical",
            f"{_PC}::test_paper_backbone_settings_are_the_releases"),
]

FAST3R_ROWS = [
    Setting("Fast3R", "frames", "frames per pass", "all frames of the window in one pass: 81 (CO3D), 150 (DL3DV)",
            "`num_frames: 81` / `150`", "identical", f"{_F3}::test_reference_frame_layout_dl3dv_window"),
    Setting("Fast3R", "frames", "frame -> map", "map t for frame t (its float32 index rounding sends frames 50 and 64 "
            "to t-1; the sampler never draws them)", "map t", "identical",
            f"{_F3}::test_reference_frame_layout_dl3dv_window"),
    Setting("Fast3R", "resize", "resize + normalisation", "PIL Lanczos straight to 512x288, (x - 0.5) / 0.5",
            "`resize: pil-lanczos`, 288x512, same normalisation", "identical",
            f"{_F3}::test_preprocess_matches_the_release_reader"),
    Setting("Fast3R", "block", "tensor read", "feature index 24 = dec_norm(fusion block 24)", "layer -1", "identical",
            f"{_F3}::test_extract_layers_are_the_release_indices"),
    Setting("Fast3R", "block", "encoder + fusion decoder", "Fast3R (f3r/models/fast3r.py)",
            "own implementation, official names (agrees to 5.9e-7 relative)", "identical",
            f"{_F3}::test_every_output_matches_with_the_drawn_and_the_pinned_ids"),
    Setting("Fast3R", "conditioning", "view image indices", "drawn afresh on every forward from the unseeded global RNG",
            "same draw rule from a seeded generator (pinnable: `image_ids`)", "deviation",
            reason="reproducibility: the release's draw cannot be repeated"),
    Setting("Fast3R", "dtype", "compute dtype / RoPE kernel", "bf16 autocast; CUDA curope or the PyTorch RoPE (not stated)",
            "`dtype: bf16`, PyTorch RoPE", "unknown",
            reason="bf16 needs a GPU (none lent); which RoPE kernel the study compiled is not stated"),
    Setting("Fast3R", "block", "attention bias at inference", "the checkpoint's config.json value (not readable offline)",
            "false", "unknown", reason="both settings match the release's code; the checkpoint's value is unchecked"),
]

_OS = "tests/test_parity_opensora.py"
_OSA = "tests/test_opensora.py"
OS = "Open-Sora2.0"

OPENSORA_ROWS = [
    Setting(OS, "frames", "frames fed, DL3DV", "129 from the window start (33 latent frames)", "`num_frames: 129`",
            "identical", f"{_OSA}::test_129_frames_give_33_latents_and_the_shift_over_them"),
    Setting(OS, "frames", "maps stored, DL3DV", "the first 21", "all 33 (the probe reads maps 0..19 only)", "deviation",
            reason="a FeatureSet serves every fed frame; the numbers are the same, the store is 57% larger"),
    Setting(OS, "frames", "frames, CO3D", "raises (needs 129 frames, CO3D clips have 81)", "81 frames, 21 latents",
            "deviation", reason="the release has no working CO3D setting; this is what its code computes for 81 frames"),
    Setting(OS, "resize", "resize + normalisation", "PIL bicubic on 8-bit frames to 848x480, Normalize(0.5, 0.5)",
            "`resize: pil-bicubic`, 2x - 1", "identical", f"{_OS}::test_e2e_fp32_every_stage_matches_release"),
    Setting(OS, "conditioning", "image condition", "frame 0 encoded alone (sampled); mask + latent, 17 -> 68 channels, cond_in",
            "same", "identical", f"{_OS}::test_e2e_fp32_every_stage_matches_release"),
    Setting(OS, "VAE", "HunyuanVideo VAE encoding", "whole clip at once; 256 px spatial tiles, overlap 0.25; scale 0.476986",
            "diffusers AutoencoderKLHunyuanVideo, strict load, `vae_framewise: false`, 256/192 tiles", "identical",
            f"{_OSA}::test_vae_encodes_the_whole_clip_by_default_not_16_frame_tiles"),
    Setting(OS, "VAE", "latents", "posterior sample (global CUDA RNG)", "`latents: sample`, seeded per video", "deviation",
            reason="same formula; the random stream is seeded so each video is reproducible on any device"),
    Setting(OS, "scheduler", "time shift", "lin(w*h//4)*sqrt(F) over the latent frames fed, computed in bf16",
            "`schedule_dtype: bf16`: 0.72265625 (21 latents), 0.765625 (33)", "identical",
            f"{_OS}::test_time_shift_equals_release_in_fp32_and_bf16"),
    Setting(OS, "scheduler", "noise mix", "(1-t) x0 + (1 - (1-1e-5)(1-t)) eps in bf16", "same", "identical",
            f"{_OS}::test_noising_equals_release_formula"),
    Setting(OS, "scheduler", "noise draw", "randn_like, global RNG seeded 42", "seeded per (seed, clip, index)",
            "deviation", reason="reproducible per video and device-independent"),
    Setting(OS, "scheduler", "timestep embedding", "torch.compile'd: 1000 t formed in fp32", "same", "identical",
            f"{_OS}::test_timestep_embedding_follows_the_compiled_release"),
    Setting(OS, "conditioning", "text", "empty prompt: T5-XXL 512 tokens (no mask) + CLIP-L pooled, bf16",
            "transformers T5 / CLIP with the same settings", "unknown",
            reason="the fixture feeds fixed embeddings; the real encoders cannot be run here"),
    Setting(OS, "block", "tensor read", "single_blocks[20] output, image tokens", "layer 40 (19 double + 21 single blocks)",
            "identical", f"{_OS}::test_mmdit_outputs_match_release"),
    Setting(OS, "block", "MMDiT", "Open-Sora 2.0 MMDiT (11B)", "own implementation, the official 1082 tensor names",
            "identical", f"{_OS}::test_mmdit_outputs_match_release"),
    Setting(OS, "dtype", "compute dtype", "MMDiT, VAE and text encoders bf16", "`dtype: bf16`, `vae_dtype: bf16`",
            "identical", f"{_OS}::test_e2e_bf16_matches_release_at_bf16_precision"),
    Setting(OS, "dtype", "attention kernel", "flash-attn (bf16, GPU)", "PyTorch attention", "unknown",
            reason="fp32 identical; bf16 flash-attn needs a GPU, none was lent"),
]

_PP = "tests/test_parity_probe.py"
_RM = "tests/test_reference_mode.py"

PROBE_ROWS = [
    Setting(ALL, "probe", "probe forward (trunk, DPT heads, camera head)", "ProbeModelPA", "Probe (`compat: reference`)",
            "identical", f"{_PP}::test_forward_matches_the_release"),
    Setting(ALL, "probe", "weights", "ProbeModelPA state dict", "strict one-to-one key mapping", "identical",
            f"{_PP}::test_release_keys_map_one_to_one"),
    Setting(ALL, "probe", "DPT residual skip", "relu(x) (in-place ReLU)", "`probe.dpt_skip_relu: true`", "identical",
            f"{_RM}::test_dpt_residual_unit_skip_adds_relu_in_reference_mode"),
    Setting(ALL, "probe", "camera / register token init", "normal, std 1e-6", "`probe.token_init_std: 1e-6` (truncated at 2 std)",
            "identical", f"{_RM}::test_tokens_start_at_std_1e6_in_reference_mode"),
    Setting(ALL, "probe", "attention heads", "16 at every width, camera head too", "`num_heads: 16`, `camera_num_heads: 16`",
            "identical", f"{_RM}::test_reference_presets_keep_16_heads"),
    Setting(ALL, "probe", "token stream dtype under bf16", "fp32 (cat promotes the fp32 tokens)", "fp32", "unknown",
            reason="identical in fp32; bf16 autocast needs a GPU to check (none lent)"),
    Setting(ALL, "training", "ground truth rebase + scale", "frame 0 identity, mean point distance over all pixels of frame 0",
            "`loss.scale_pixels: all`", "identical", f"{_PP}::test_ground_truth_preparation_matches_the_release"),
    Setting(ALL, "training", "scale outside [1e-3, 1e4]", "returns two values, the dataset's unpacking raises", "left unscaled",
            "deviation", reason="the release crashes on such a clip; vidprobe trains on it unscaled"),
    Setting(ALL, "training", "loss clamps", "every per-pixel, confidence-weighted and camera Huber element at 100",
            "`loss.clamp: 100`", "identical", f"{_PP}::test_losses_match_the_release"),
    Setting(ALL, "training", "point normaliser", "sum / (count + 1e-3), clamped to [1e-3, 1e3]", "`loss.point_norm: clamped`",
            "identical", f"{_RM}::test_point_normaliser_is_count_plus_1e3_clamped_to_1e3"),
    Setting(ALL, "training", "non-finite pixel terms", "set to 0", "the run stops with the term named", "deviation",
            reason="the gradients are NaN there anyway; a silently corrupted run is worse than a stopped one"),
    Setting(ALL, "training", "supervised pixels", "every pixel", "valid pixels (all of them on VGGT labels)", "deviation",
            reason="identical on VGGT pseudo-labels, where every pixel is valid; other labels have holes"),
    Setting(ALL, "training", "optimiser", "AdamW 1e-4 (0.9, 0.95), weight decay 0.05 on every parameter",
            "`optim.decay_all: true`", "identical", f"{_PP}::test_optimizer_steps_match_the_release"),
    Setting(ALL, "training", "gradient clipping", "none", "`optim.grad_clip: 0`", "identical",
            "tests/test_train.py::test_reference_mode_run"),
    Setting(ALL, "training", "schedule", "pl_bolts linear warm-up from 0 over W = int(10 * total / epochs), cosine to 1e-6",
            "`optim.warmup_rule: from_zero`, `warmup_epochs: 10`", "identical", f"{_PP}::test_lr_schedules_match_the_release"),
    Setting(ALL, "training", "steps per epoch", "the last partial batch dropped", "`drop_last: true`", "identical",
            f"{_RM}::test_steps_per_epoch_drop_the_last_partial_batch"),
    Setting(ALL, "training", "training frames", "raw gaps >= 5 in [0, 76), floored to 1+4k (10.8% of draws have a gap of 4)",
            "`sampler.method: gaps_then_floor`", "identical", f"{_PP}::test_frame_draw_maps_cut_points_as_the_release"),
    Setting(ALL, "training", "validation frames", "redrawn on every pass (its seed 0 is tested as false)",
            "one fixed draw per scene", "deviation", reason="a fixed evaluation set makes runs comparable"),
    Setting(ALL, "training", "checkpoint reported", "last epoch (last.ckpt)", "`last` (and `best`, recorded apart)",
            "unknown", reason="vidprobe evaluates last; no test yet pins which checkpoint the report compares"),
    Setting(ALL, "training", "global batch", "10 clips per GPU x the number of GPUs (not stated)", "10 per process",
            "unknown", reason="the release does not say how many GPUs trained each row"),
]

_PM = "tests/test_parity_metrics.py"

METRIC_ROWS = [
    Setting(ALL, "metrics", "Point Err fit set", "Sim(3) Umeyama on the top 25% GT confidence of ALL pixels "
            "(np.percentile in float32, >=); fewer than 3 points: no alignment", "`metrics.pixel_set: all`", "identical",
            f"{_PM}::test_point_err_per_clip_matches_release"),
    Setting(ALL, "metrics", "Point Err mean", "sum(c e) / (sum c + 1e-6); a NaN prediction gives NaN", "same", "identical",
            f"{_PM}::test_dense_split_values_match_release_batch"),
    Setting(ALL, "metrics", "Depth Err", "two clamps at 100 (before and after the confidence), NaN/Inf -> 0, "
            "mean over all pixels", "same", "identical", f"{_PM}::test_depth_err_per_clip_matches_release"),
    Setting(ALL, "metrics", "camera pairs", "inv(P_i) P_j on world-to-camera matrices", "`metrics.camera_pairs: release`",
            "identical", f"{_PM}::test_pair_errors_match_release"),
    Setting(ALL, "metrics", "rotation angle", "angle between quaternions (largest-denominator conversion)",
            "`metrics.rotation_angle: release_quaternion`", "identical", f"{_PM}::test_pair_errors_match_release"),
    Setting(ALL, "metrics", "translation angle", "t / (|t| + 1e-15), no threshold, sign folded",
            "`metrics.translation_direction: release_eps`", "identical", f"{_PM}::test_pair_errors_match_release"),
    Setting(ALL, "metrics", "non-finite cameras", "the affected pairs fail (fall in no bin, count in the denominator)",
            "same", "identical", "tests/test_metrics_camera.py::test_nonfinite_predicted_cameras_fail"),
    Setting(ALL, "metrics", "AUC / RRA / RTA", "31 bins over [0, 30] degrees per validation batch of 10 clips",
            "`metrics.camera_auc: release_31bins`, batches of 10", "identical",
            f"{_PM}::test_camera_metrics_per_batch_match_release"),
    Setting(ALL, "metrics", "mean over batches", "Lightning on_epoch mean weighted by batch_size", "mean weighted by clips",
            "unknown", reason="Lightning's reduction is not run in the fixture; only the formula is matched"),
    Setting(ALL, "metrics", "failed clips (clean mode)", "NaN Point Err, depth terms 0, failed pairs",
            "clean mode: +inf errors, 0 fractions, counted; evaluate exits 1", "deviation",
            reason="a diverged probe must never look better than a poor one (reference mode keeps the release's values)"),
    Setting(ALL, "data", "DL3DV transforms.json", "nerfstudio: top-level intrinsics first, distortion_params, "
            "legacy applied_transform when absent and a colmap model exists", "same (nerfstudio's rules)", "identical",
            "tests/test_dl3dv.py::test_missing_applied_transform_follows_nerfstudio"),
    Setting(ALL, "data", "CO3D split", "its own 9:1 split by video (seed 0)", "9:1 by video; overlapping set lists refused",
            "deviation", reason="a video-level split cannot follow a set list that puts one sequence on both sides"),
]

_PD = "tests/test_parity_diffusion.py"
_DB = "tests/test_diffusion_backbones.py"
_AE = "tests/test_aether.py"
_FM = "tests/test_fullsize_meta.py::test_paper_config_taps_the_reference_block"


def _wan_rows(model: str, c: int, blocks: int) -> list[Setting]:
    return [
        Setting(model, "frames", "frames", "81, one clip (frame t -> latent floor((t-1)/4)+1)", "81, one clip",
                "identical", f"{_DB}::test_wan_frame_index_reference_layout"),
        Setting(model, "resize", "resize", "diffusers VideoProcessor on PIL frames = PIL Lanczos to 832x480, no crop",
                "`resize: pil-lanczos`", "identical", f"{_DB}::test_pil_lanczos_preprocess_equals_diffusers_video_processor"),
        Setting(model, "normalisation", "latent normalisation", "[-1, 1] frames; (z - mean) * (1 / std)", "same",
                "identical", f"{_PD}::test_wan_feature_pass_inputs_match_release"),
        Setting(model, "scheduler", "UniPC schedule at index 749", "shift 3.0, 1000 steps: timestep 500 / sigma 0.50100 "
                "with diffusers <= 0.36, 502 / 0.50233 with >= 0.37 (the release pins no version)",
                "`flow_schedule: legacy` (500 / 0.50100); `current` selectable", "unknown",
                reason="the release pins no diffusers; the paper (Dec 2025) predates 0.37 (Mar 2026), so legacy is assumed"),
        Setting(model, "scheduler", "noise", "add_noise with unseeded randn", "same formula, seeded per (seed, clip, index)",
                "deviation", reason="reproducible per video"),
        Setting(model, "dtype", "compute dtype", "transformer and VAE fp32, no autocast", "`dtype: fp32`", "identical",
                f"{_PD}::test_wan_feature_pass_inputs_match_release"),
        Setting(model, "conditioning", "text", "empty prompt, UMT5 in fp32", "same, cached per dtype", "unknown",
                reason="the real text encoder cannot be run here; the fixture feeds a seeded embedding"),
        Setting(model, "block", "block and tensor read", f"blocks[20] output (0-based, of {blocks})",
                "layer 21 (hook on blocks[20], early stop)", "identical", _FM),
        Setting(model, "block", "grid / channels", f"21x30x52, C={c}", f"21x30x52x{c}", "identical", _FM),
    ]


COG = "CogVideoX"
COG_ROWS = [
    Setting(COG, "frames", "frames, DL3DV", "97 = 2 interleaved clips of 49 sharing frame 0", "same", "identical",
            f"{_PD}::test_interleaved_clips_match_release"),
    Setting(COG, "frames", "frames, CO3D", "requires 97 frames and raises on CO3D's 81", "2 x 41 (the whole video)",
            "deviation", reason="the release cannot run on CO3D; query frames < 76 keep their clip and latent position"),
    Setting(COG, "resize", "resize", "VideoProcessor = PIL Lanczos to 720x480", "`resize: pil-lanczos`", "identical",
            f"{_DB}::test_pil_lanczos_preprocess_equals_diffusers_video_processor"),
    Setting(COG, "conditioning", "image condition", "first-frame posterior sample x 0.7, zero-padded, after x_t",
            "`condition_latent: sample` (seeded)", "identical", f"{_PD}::test_cogvideox_i2v_feature_pass_inputs_match_release"),
    Setting(COG, "scheduler", "DDIM at index 749", "timestep 250 (alpha_bar 0.65246)", "same", "identical",
            f"{_PD}::test_cogvideox_i2v_feature_pass_inputs_match_release"),
    Setting(COG, "dtype", "compute dtype", "fp16 weights under fp16 autocast, noising in fp16",
            "`dtype: fp16, autocast: true`", "unknown", reason="read from the code; fp16 autocast numerics need a GPU"),
    Setting(COG, "block", "block and tensor read", "transformer_blocks[20] hidden states (video tokens)", "layer 21",
            "identical", _FM),
    Setting(COG, "block", "grid / channels", "13x30x45 per clip, C=3072", "13x30x45x3072 per clip", "identical", _FM),
]

AE = "Aether"
AETHER_ROWS = [
    Setting(AE, "frames", "frames", "81 = 2 clips of 41", "same", "identical", f"{_PD}::test_interleaved_clips_match_release"),
    Setting(AE, "conditioning", "latent / condition channels", "56 = rgb 16 | disparity 16 | raymap 24; condition "
            "40 = image latent 16 | camera 24 (zeros)", "same (the clean first-frame latent at inputs 56-71; was 48-63)",
            "identical", f"{_AE}::test_clean_first_frame_latent_sits_at_input_channels_56_to_71"),
    Setting(AE, "conditioning", "geometry latents", "Aether's own 4-step reconstruction (CogVideoXDPMScheduler, "
            "guidance 1, fps 8), unseeded", "`geometry: reconstruct`, seeded", "identical",
            f"{_PD}::test_aether_reconstruction_matches_release_end_to_end"),
    Setting(AE, "VAE", "VAE", "bf16, slicing + tiling, mean for x0, sample for conditions",
            "`vae_tiling: true, condition_latent: sample`", "identical", f"{_PD}::test_aether_feature_pass_inputs_match_release"),
    Setting(AE, "scheduler", "noise at index 749", "DPM add_noise, timestep 250", "DDIM add_noise (identical numbers)",
            "identical", f"{_PD}::test_aether_feature_pass_inputs_match_release"),
    Setting(AE, "dtype", "compute dtype", "bf16 under bf16 autocast; T5 in fp32", "`dtype: bf16, autocast: true`",
            "unknown", reason="read from the code; bf16 autocast numerics need a GPU"),
    Setting(AE, "block", "block and tensor read", "transformer_blocks[20]", "layer 21", "identical", _FM),
    Setting(AE, "block", "grid / channels", "11 latent frames per clip, C=3072", "11x30x45x3072 per clip", "identical", _FM),
    Setting(AE, "block", "architecture fields besides the channels", "AetherV1 transformer config.json",
            "CogVideoX-5B-I2V's, 56 out / 96 in", "unknown", reason="Aether's config.json cannot be read offline"),
]

GRID_ROWS = [
    Setting("V-JEPA", "block", "grid / channels", "5 clips of 16 -> 8x30x52, C=1280", "8x30x52x1280 per clip",
            "identical", _FM),
    Setting("DINOv2", "block", "grid / channels", "30x52, C=1024 per frame", "30x52x1024", "identical", _FM),
    Setting("Fast3R", "block", "grid / channels", "18x32, C=1024", "18x32x1024", "identical", _FM),
    Setting(OS, "block", "grid / channels", "21x30x53, C=3072", "21x30x53x3072", "identical", _FM),
]

ROWS: list[Setting] = [*LABEL_ROWS, *PROBE_ROWS, *METRIC_ROWS, *_wan_rows("WAN2.1-14B", 5120, 40),
                       *_wan_rows("WAN2.1-1.3B", 1536, 30), *COG_ROWS, *AETHER_ROWS, *GRID_ROWS, *VJEPA_ROWS, *DINO_ROWS, *FAST3R_ROWS, *OPENSORA_ROWS]
