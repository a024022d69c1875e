"""Continuous batching (engine/batch_pipeline.py): a job's result does not depend on its batch-mates.

CPU, tiny random MVDream (engine/guidance/tiny.py). Tolerances:
- alone (one job, no padding) the batched path runs the very same operations on the same shapes
  as Generator.generate, so the Gaussians are bitwise equal;
- beside others, the encoder and UNet see a larger batch; every op is per-sample, but CPU
  kernels may sum in a different order for another batch shape, a ~1e-7 relative difference per
  step that Adam (which normalises gradients) carries through 8 steps to ~1e-5 in the
  parameters (measured: at most 1.4e-5 on opacity logits). ATOL = 1e-4 is 7x that and far below
  any real difference: a batch-mate's noise or text leaking in moves parameters by ~1e-2.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.batch_pipeline import BatchEngine, bucket_for, buckets_for
from engine.pipeline import Generator
from engine.presets import Preset, load_preset

ATOL = 1e-4
TINY = {
    "iters": 8,
    "num_pts": 200,
    "max_gaussians": 400,
    "min_output_gaussians": 500,
    "render_size": 32,
    "ref_size": 32,
    "densification_interval": 3,  # densify-and-prune at steps 3 and 6: per-job schedules
    "density_start_iter": 1,
    "density_end_iter": 6,
    "max_batch": 4,
}
PROMPT, SEED = "a red sports car", 5
MATES = [("a wooden boat", 1), ("a tree", 7), ("a small robot", 9)]


@pytest.fixture(scope="module")
def tiny() -> Preset:
    return dataclasses.replace(load_preset("smoke"), **TINY)


@pytest.fixture(scope="module")
def generator(tiny: Preset) -> Generator:
    g = Generator(tiny, device="cpu")
    g.load()
    return g


@pytest.fixture(scope="module")
def single(generator: Generator):  # noqa: ANN201
    return generator.generate(PROMPT, seed=SEED)


def _arrays(splats) -> list[np.ndarray]:  # noqa: ANN001
    return [splats.positions, splats.sh_dc, splats.opacities, splats.scales, splats.rotations]


def _assert_close(a, b, atol: float) -> None:  # noqa: ANN001
    assert len(a) == len(b)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def test_buckets() -> None:
    assert buckets_for(8) == [1, 2, 4, 8]
    assert buckets_for(6) == [1, 2, 4, 6]
    assert buckets_for(1) == [1]
    assert [bucket_for(n, 8) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]


def test_a_job_alone_matches_the_single_job_path_exactly(generator: Generator, single) -> None:  # noqa: ANN001
    alone = BatchEngine(generator, pad_to_bucket=False).run([PROMPT], [SEED])[0]
    for x, y in zip(_arrays(single.splats), _arrays(alone.splats), strict=True):
        assert np.array_equal(x, y)
    assert (alone.steps, alone.seed, alone.preset) == (single.steps, single.seed, single.preset)
    assert set(alone.timings) == set(single.timings)


def test_a_job_beside_three_others_gives_the_same_gaussians(generator: Generator, single) -> None:  # noqa: ANN001
    prompts = [MATES[0][0], PROMPT, *(m[0] for m in MATES[1:])]
    seeds = [MATES[0][1], SEED, *(m[1] for m in MATES[1:])]
    results = BatchEngine(generator).run(prompts, seeds)
    _assert_close(single.splats, results[1].splats, ATOL)
    # and the batch-mates really are different runs (not the same job four times)
    assert not np.allclose(results[0].splats.positions[:200], results[1].splats.positions[:200], atol=1e-3)


def test_padding_to_the_bucket_does_not_change_a_job(generator: Generator, single) -> None:  # noqa: ANN001
    # 3 jobs in an 8-wide engine run padded to 4 rows-groups, as on CUDA
    engine = BatchEngine(generator, max_batch=8, pad_to_bucket=True)
    results = engine.run([MATES[0][0], PROMPT, MATES[1][0]], [MATES[0][1], SEED, MATES[1][1]])
    _assert_close(single.splats, results[1].splats, ATOL)


def test_a_job_joins_at_a_step_boundary_and_one_leaves_without_stopping_the_others(
    generator: Generator,
    tiny: Preset,
    single,  # noqa: ANN001
) -> None:
    engine = BatchEngine(generator)
    early = engine.add(MATES[0][0], MATES[0][1])
    for _ in range(3):
        assert engine.step() == []
    job = engine.add(PROMPT, SEED)  # joins 3 steps behind its mate
    assert (early.step, job.step) == (3, 0)
    finished = []
    while engine.jobs:
        done = [(j.id, j.step, r) for j, r in engine.step()]
        if done and done[0][0] == early.id:
            assert engine.jobs == [job] and job.step == tiny.iters - 3  # the mate left; it goes on
        finished += done
    assert [f[0] for f in finished] == [early.id, job.id]
    _assert_close(single.splats, finished[1][2].splats, ATOL)
    assert engine.add("after", 0).id == job.id + 1  # the engine takes new work when drained


def test_engine_refuses_more_than_max_batch(generator: Generator) -> None:
    engine = BatchEngine(generator, max_batch=2)
    engine.add("a", 0)
    engine.add("b", 1)
    with pytest.raises(RuntimeError, match="batch full"):
        engine.add("c", 2)


def test_warmup_runs_every_bucket_short_and_restores_the_preset(
    generator: Generator, tiny: Preset, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[tuple[int, int]] = []
    real_run = BatchEngine.run

    def spy(self: BatchEngine, prompts: list[str], seeds=None, on_step=None):  # noqa: ANN001, ANN202
        runs.append((len(prompts), self.preset.iters))
        return real_run(self, prompts, seeds, on_step)

    monkeypatch.setattr(BatchEngine, "run", spy)
    engine = BatchEngine(generator, max_batch=4)
    assert engine.warmup() == 0.0 and runs == []  # CPU, not compiling: nothing to capture
    assert engine.warmup(force=True) > 0
    short = min(tiny.iters, 8)  # warmup_preset's length
    assert runs == [(1, short), (2, short), (4, short)]
    assert generator.preset is tiny and engine.jobs == []


def test_substage_timing_hook_times_the_batched_vae_and_unet(generator: Generator) -> None:
    engine = BatchEngine(generator)
    assert engine.time_substages is False  # off unless asked (it syncs)
    engine.time_substages = True
    result = engine.run([PROMPT, "a tree"], [SEED, 7])[0]
    assert set(result.substages) == {"vae_encode", "unet"}
    assert all(seconds > 0 for seconds in result.substages.values())
    assert set(engine.step_timings) >= {"render", "guidance", "backward", "vae_encode", "unet"}
    assert result.substages["unet"] < result.timings["guidance"]  # inside the guidance stage
