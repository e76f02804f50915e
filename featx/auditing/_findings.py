"""Outliers (kNN distance) and image findings (dark, bright, blurry, low information, odd size or aspect
ratio) from the statistics measured at extraction (featx.images._quality)."""
from __future__ import annotations

import numpy as np

from featx.auditing._files import Files, Table
from featx.images._quality import STATS

OUTLIER_Z = 3.5  # modified z-score cut-off (Iglewicz and Hoaglin)
IMAGE_FINDINGS = ("dark", "bright", "blurry", "low_information", "odd_size", "odd_aspect_ratio")  # see image_findings
DARK, BRIGHT = 0.12, 0.85  # mean grey level (0-1): ELPV 1st-99th percentile 0.28-0.79, photographs 0.08-0.77
LOW_ENTROPY = 2.0  # bits of the grey histogram: ELPV >= 3.5, photographs >= 1.4 (a binary silhouette), a blank image 0
ODD_AREA, ODD_ASPECT = 2.0, 0.585  # log2: 4x the median area or a quarter of it; 1.5x the median aspect ratio


def modified_z(values: np.ndarray) -> np.ndarray:
    """Iglewicz and Hoaglin's modified z-score: 0.6745 (x - median) / MAD (zeros when the MAD is 0)."""
    deviation = np.median(np.abs(values - np.median(values))) if len(values) else 0
    return 0.6745 * (values - np.median(values)) / deviation if deviation > 0 else np.zeros_like(values)


def image_findings(files: Files) -> dict[str, tuple[Table, set[str]]]:
    """Image findings from the statistics measured at extraction (rows without them are left out): name ->
    (table of the flagged files, worst first, with the statistic and the score compared; their paths).
    Thresholds calibrated on ELPV cells and scikit-image photographs (docs/audit.md): brightness and entropy
    are absolute; blur, size and aspect ratio are judged against the data set's own images (a solar cell is
    smooth, a photograph is not: absolute blur scores of the two overlap)."""
    if files.measured is None:
        return {}
    rows = np.flatnonzero(files.measured)
    stat = {name: files.stats[rows, i] for i, name in enumerate(STATS)}
    area, aspect = np.log2(stat["width"] * stat["height"]), np.log2(stat["width"] / stat["height"])
    scores = {  # finding -> (statistic shown, its values, score: higher is worse, flagged)
        "dark": ("brightness", stat["brightness"], -stat["brightness"], stat["brightness"] < DARK),
        "bright": ("brightness", stat["brightness"], stat["brightness"], stat["brightness"] > BRIGHT),
        "blurry": ("blur", stat["blur"], -modified_z(np.log10(stat["blur"] + 1e-9)),
                   modified_z(np.log10(stat["blur"] + 1e-9)) < -OUTLIER_Z),
        "low_information": ("entropy", stat["entropy"], -stat["entropy"], stat["entropy"] < LOW_ENTROPY),
        "odd_size": ("pixels", stat["width"] * stat["height"], np.abs(area - np.median(area)),
                     np.abs(area - np.median(area)) > ODD_AREA),
        "odd_aspect_ratio": ("aspect_ratio", stat["width"] / stat["height"], np.abs(aspect - np.median(aspect)),
                             np.abs(aspect - np.median(aspect)) > ODD_ASPECT),
    }
    found = {}
    for name, (shown, values, score, flagged) in scores.items():
        table, paths = Table(["rank", "path", "label", shown, "width", "height", "score"]), set()
        ranked = np.flatnonzero(flagged)[np.argsort(-score[flagged], kind="stable")]
        for rank, k in enumerate(ranked.tolist(), 1):
            for i in files.by_row[int(rows[k])]:
                table.rows.append([rank, files.paths[i], files.labels[i], float(values[k]), int(stat["width"][k]),
                                   int(stat["height"][k]), float(score[k])])
                paths.add(files.paths[i])
        found[name] = table, paths
    return found


def outliers(files: Files, sims: np.ndarray) -> tuple[Table, set[str]]:
    """Rows ranked by mean cosine distance to their nearest rows; flagged above a modified z-score of
    OUTLIER_Z (median and median absolute deviation: robust to the outliers themselves)."""
    score = (1 - sims).mean(axis=1) if sims.shape[1] else np.zeros(len(sims))
    z = modified_z(score)
    table, flagged = Table(["rank", "path", "label", "score", "z", "flagged"]), set()
    for rank, r in enumerate(np.argsort(-score, kind="stable").tolist(), 1):
        for i in files.by_row[r]:
            table.rows.append([rank, files.paths[i], files.labels[i], float(score[r]), float(z[r]), bool(z[r] > OUTLIER_Z)])
            if z[r] > OUTLIER_Z:
                flagged.add(files.paths[i])
    return table, flagged

