"""Tests for the competition metric."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from birdclef.metric import ScoringError, per_class_auc, score


def _frames(seed: int, n_rows: int = 48, n_cls: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"s{i // 12}_{5 * (i % 12 + 1)}" for i in range(n_rows)]
    cols = [f"sp{c}" for c in range(n_cls)]
    truth = (rng.random((n_rows, n_cls)) < 0.2).astype(int)
    truth[:, 0] = 0  # a species with no positive window is skipped
    sol = pd.DataFrame(truth, columns=cols)
    sol.insert(0, "row_id", ids)
    sub = pd.DataFrame(rng.random((n_rows, n_cls)), columns=cols)
    sub.insert(0, "row_id", ids)
    return sol, sub


@pytest.mark.parametrize("seed", range(5))
def test_score_equals_sklearn_macro_auc_over_scored_columns(seed):
    sol, sub = _frames(seed)
    cols = [c for c in sol.columns[1:] if sol[c].sum() > 0]
    expected = np.mean([roc_auc_score(sol[c], sub[c]) for c in cols])
    assert abs(score(sol, sub) - expected) < 1e-12
    assert "sp0" not in per_class_auc(sol, sub)


def test_score_ignores_row_order():
    sol, sub = _frames(1)
    assert score(sol, sub.sample(frac=1.0, random_state=0)) == pytest.approx(score(sol, sub), abs=1e-12)


def test_perfect_and_inverted_predictions():
    sol, _ = _frames(2)
    perfect = sol.copy()
    assert score(sol, perfect) == 1.0
    inverted = sol.copy()
    inverted.iloc[:, 1:] = 1 - inverted.iloc[:, 1:]
    assert score(sol, inverted) == 0.0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.drop(columns=["sp3"]), "missing column"),
        (lambda s: s.assign(extra=0.5), "extra column"),
        (lambda s: s.iloc[:-1], "row_id mismatch"),
        (lambda s: s.assign(row_id=s.row_id.str.replace("s0_", "x0_")), "row_id mismatch"),
        (lambda s: s.assign(sp2="high"), "non-numeric"),
        (lambda s: s.assign(sp4=np.nan), "NaN"),
        (lambda s: pd.concat([s, s.iloc[:1]]), "duplicate row ids"),
    ],
)
def test_malformed_submission_is_a_clear_error(mutate, message):
    sol, sub = _frames(3)
    with pytest.raises(ScoringError, match=message):
        score(sol, mutate(sub))


def test_no_positive_anywhere_is_an_error():
    sol, sub = _frames(4)
    sol.iloc[:, 1:] = 0
    with pytest.raises(ScoringError, match="nothing to score"):
        score(sol, sub)


# ---------------------------------------------------------------- macro_auc: the one scoring summary


TAXA = {"sp0": "Aves", "sp1": "Aves", "sp2": "Aves", "sp3": "Amphibia", "sp4": "Amphibia", "sp5": "Insecta",
        "sp6": "Insecta"}  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_macro_auc_is_the_score_with_per_taxon_means(seed):
    from birdclef.metric import macro_auc

    sol, sub = _frames(seed)
    per = per_class_auc(sol, sub)
    out = macro_auc(sol, sub, TAXA, count=True)
    assert out["auc"] == pytest.approx(score(sol, sub), abs=1e-12)
    assert out["n_scored_classes"] == len(per) == 6  # sp0 has no positive
    assert out["auc_Aves"] == pytest.approx(np.mean([per["sp1"], per["sp2"]]), abs=1e-12)
    assert out["auc_Amphibia"] == pytest.approx(np.mean([per["sp3"], per["sp4"]]), abs=1e-12)
    assert set(macro_auc(sol, sub)) == {"auc"}


def test_macro_auc_nothing_to_score_is_nan_and_strict_raises_on_misaligned_rows():
    from birdclef.metric import macro_auc

    sol, sub = _frames(0)
    sol.iloc[:, 1:] = 0
    none = macro_auc(sol, sub, TAXA, strict=True, count=True)
    assert np.isnan(none["auc"]) and none["n_scored_classes"] == 0 and set(none) == {"auc", "n_scored_classes"}
    sol, sub = _frames(0)
    assert np.isnan(macro_auc(sol, sub.iloc[1:])["auc"])  # a row missing: per-epoch scores say nan
    with pytest.raises(ScoringError, match="row_id mismatch"):
        macro_auc(sol, sub.iloc[1:], strict=True)


def test_the_submission_score_is_macro_auc():
    from birdclef.infer.submission import SubmissionError, evaluate
    from birdclef.metric import macro_auc

    sol, sub = _frames(4)
    ours = macro_auc(sol, sub, TAXA, count=True)
    out = evaluate(sol, sub, TAXA)
    assert out == {"score": ours["auc"], "n_scored_classes": 6, "score_aves": ours["auc_Aves"],
                   "score_amphibia": ours["auc_Amphibia"], "score_insecta": ours["auc_Insecta"]}  # fmt: skip
    with pytest.raises(ScoringError):
        evaluate(sol, sub.iloc[1:])
    sol.iloc[:, 1:] = 0
    with pytest.raises(SubmissionError, match="nothing to score"):
        evaluate(sol, sub)


# ---------------------------------------------------------------- the bootstrap over soundscapes


def _scapes(n_files: int, seed: int = 0, windows: int = 12, n_cls: int = 6, signal: float = 1.0,
            file_noise: float = 1.0, noise_seed: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Soundscapes whose windows share a per-file difficulty: ``signal`` separates positives, each file's own offset
    per species (``file_noise``) shifts all its windows alike, as a site's background would."""
    rng = np.random.default_rng(seed)
    ids = [f"sc{f:03d}_{5 * (w + 1)}" for f in range(n_files) for w in range(windows)]
    cols = [f"sp{c}" for c in range(n_cls)]
    truth = (rng.random((len(ids), n_cls)) < 0.15).astype(int)
    offset = np.repeat(rng.normal(0, file_noise, (n_files, n_cls)), windows, axis=0)
    noise = np.random.default_rng(noise_seed if noise_seed is not None else seed + 1000).normal(size=truth.shape)
    sol = pd.DataFrame(truth, columns=cols)
    sol.insert(0, "row_id", ids)
    sub = pd.DataFrame(signal * truth + offset + noise, columns=cols)
    sub.insert(0, "row_id", ids)
    return sol, sub


def _resampled(frame: pd.DataFrame, counts: np.ndarray) -> pd.DataFrame:
    """The resampled set by hand: every window of file f (in sorted file order) repeated counts[f] times."""
    files = sorted(set(frame["row_id"].str.rsplit("_", n=1).str[0]))
    of = frame["row_id"].str.rsplit("_", n=1).str[0]
    parts = []
    for f, m in zip(files, counts, strict=True):
        for copy in range(m):
            part = frame[of == f].copy()
            part["row_id"] = part["row_id"] + f"#{copy}"
            parts.append(part)
    return pd.concat(parts, ignore_index=True)


def test_bootstrap_equals_the_metric_recomputed_on_resampled_files_by_hand():
    from birdclef.metric import bootstrap_scores, resample_counts

    sol, sub = _scapes(9, seed=3, windows=4)
    # sp5: one class-present window in the whole set (file sc004): scored only in resamples that draw that file.
    sol["sp5"] = 0
    sol.loc[17, "sp5"] = 1
    counts = resample_counts(9, 16, seed=7)
    boot = bootstrap_scores(sol, sub, 16, seed=7)
    assert counts[:, 4].min() == 0 and counts[:, 4].max() > 0  # both cases occur among these resamples
    for r in range(16):
        expected = score(_resampled(sol, counts[r]), _resampled(sub, counts[r]))
        assert boot[r] == pytest.approx(expected, abs=1e-12)
        assert ("sp5" in per_class_auc(_resampled(sol, counts[r]), _resampled(sub, counts[r]))) == (counts[r, 4] > 0)


def test_resample_counts_draw_files_with_replacement_and_are_fixed_by_the_seed():
    from birdclef.metric import resample_counts

    counts = resample_counts(30, 500, seed=1)
    assert counts.shape == (500, 30) and (counts.sum(axis=1) == 30).all()
    assert np.array_equal(counts, resample_counts(30, 500, seed=1))
    assert not np.array_equal(counts, resample_counts(30, 500, seed=2))
    assert abs((counts == 0).mean() - (1 - 1 / 30) ** 30) < 0.02  # ~36.8% of files left out of each resample


def test_interval_contains_the_point_estimate_and_is_deterministic_for_a_seed():
    from birdclef.metric import score_interval

    sol, sub = _scapes(40)
    iv = score_interval(sol, sub, n_resamples=400)
    assert iv.score == pytest.approx(score(sol, sub), abs=1e-12)
    assert iv.low < iv.score < iv.high and iv.n_files == 40 and iv.n_resamples == 400
    assert iv == score_interval(sol, sub, n_resamples=400)
    assert iv != score_interval(sol, sub, n_resamples=400, seed=1)
    assert iv.as_metrics("score") == {"score_ci_low": iv.low, "score_ci_high": iv.high}
    assert score_interval(sol, sub, n_resamples=400, level=0.5).half_width < iv.half_width


def test_interval_narrows_with_more_files():
    from birdclef.metric import score_interval

    sol, sub = _scapes(240, seed=5)
    widths = [score_interval(sol.iloc[: 12 * n], sub.iloc[: 12 * n], n_resamples=400).half_width
              for n in (15, 60, 240)]  # fmt: skip
    # The sampling error falls as 1/sqrt(files): about half per 4x the files, a quarter per 16x.
    assert widths[0] > widths[1] > widths[2]
    assert 0.35 < widths[1] / widths[0] < 0.7 and 0.35 < widths[2] / widths[1] < 0.7
    assert 0.18 < widths[2] / widths[0] < 0.35


def test_the_unit_resampled_is_the_file_not_the_window():
    from birdclef.metric import score_interval

    # One window per file, then the same files with every window copied 12 times: nothing new is observed, so
    # resampling files gives the very same interval; resampling windows would pretend 12x the data.
    sol1, sub1 = _scapes(30, seed=2, windows=1)
    stem = sol1["row_id"].str.rsplit("_", n=1).str[0]
    sol12, sub12 = (pd.concat([f.assign(row_id=stem + f"_{5 * (w + 1)}") for w in range(12)], ignore_index=True)
                    for f in (sol1, sub1))  # fmt: skip
    per_file = score_interval(sol1, sub1, n_resamples=400)
    copied = score_interval(sol12, sub12, n_resamples=400)
    assert copied.n_files == 30 and copied.low == pytest.approx(per_file.low, abs=1e-12)
    assert copied.high == pytest.approx(per_file.high, abs=1e-12)
    windows = score_interval(sol12, sub12, n_resamples=400, groups=sol12["row_id"].tolist())
    assert windows.n_files == 360 and windows.half_width < 0.5 * copied.half_width  # ~1/sqrt(12) = 0.29


def test_a_species_in_one_window_only_is_scored_where_drawn():
    from birdclef.metric import bootstrap_scores, score_interval

    sol, sub = _scapes(12, seed=4, n_cls=1)
    sol["sp0"] = 0
    sol.loc[30, "sp0"] = 1  # the only positive: file sc002
    boot = bootstrap_scores(sol, sub, 200)
    assert np.isnan(boot).any() and np.isfinite(boot).any()  # nothing to score without sc002
    iv = score_interval(sol, sub, n_resamples=200)
    assert np.isfinite(iv.low) and iv.low <= iv.score <= iv.high


def test_paired_comparison_detects_a_real_improvement():
    from birdclef.metric import paired_bootstrap, score_interval

    sol, weak = _scapes(60, seed=8, signal=0.8)
    _, strong = _scapes(60, seed=8, signal=1.6)  # same files, offsets and noise: only the signal is larger
    out = paired_bootstrap(sol, weak, strong, n_resamples=400)
    assert out.verdict == "real" and out.real and out.share_b_better == 1.0
    assert out.diff == pytest.approx(score(sol, strong) - score(sol, weak), abs=1e-12) and out.low < out.diff < out.high
    assert out.low > 0 and out.n_files == 60
    # The difference is resampled on shared files: what both score alike cancels, the interval is much narrower.
    assert out.high - out.low < 0.5 * (score_interval(sol, weak, n_resamples=400).half_width * 2)
    backwards = paired_bootstrap(sol, strong, weak, n_resamples=400)
    assert backwards.real and backwards.high < 0 and backwards.share_b_better == 0.0


def test_paired_comparison_says_within_noise_for_predictions_alike_in_distribution():
    from birdclef.metric import paired_bootstrap

    sol, a = _scapes(60, seed=9, noise_seed=1)
    _, b = _scapes(60, seed=9, noise_seed=2)  # the same model, another draw of its window noise
    out = paired_bootstrap(sol, a, b, n_resamples=400)
    assert out.verdict == "within noise" and out.low < 0 < out.high and 0.025 < out.share_b_better < 0.975
    same = paired_bootstrap(sol, a, a.sample(frac=1.0, random_state=0), n_resamples=400)
    assert (same.diff, same.low, same.high, same.share_b_better, same.verdict) == (0.0, 0.0, 0.0, 0.0, "within noise")
    with pytest.raises(ScoringError, match="row_id mismatch"):
        paired_bootstrap(sol, a, b.iloc[1:])


def test_with_interval_adds_the_two_keys_or_nothing():
    from birdclef.metric import score_interval, with_interval

    sol, sub = _scapes(20)
    iv = score_interval(sol, sub, n_resamples=100)
    out = with_interval({"soundscape_auc": iv.score}, "soundscape_auc", sol, sub, n_resamples=100)
    assert out == {"soundscape_auc": iv.score, "soundscape_auc_ci_low": iv.low, "soundscape_auc_ci_high": iv.high}
    assert with_interval({}, "score", sol, sub.iloc[1:]) == {}  # misaligned: the point score is nan, no interval
    sol.iloc[:, 1:] = 0
    assert with_interval({}, "score", sol, sub) == {}
