"""``python -m gslrm.data check ROOT``: what is in a dataset and what is wrong with it, with suggested fixes."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gslrm.data.format import CAMERAS_FILE, DataFormatError, read_cameras, read_split
from gslrm.data.images import load_rgba
from gslrm.rig import NormalizationConfig, estimate_up, fit_rig_transform, optical_axes_center

__all__ = ["check_dataset", "main"]


@dataclass
class Report:
    samples: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    views: Counter = field(default_factory=Counter)
    samples_by_views: dict = field(default_factory=dict)  # view count -> sample folders
    sizes: Counter = field(default_factory=Counter)
    distances: list[float] = field(default_factory=list)
    normalized_distances: list[float] = field(default_factory=list)
    normalized_centre_offsets: list[float] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)
    ups: list[np.ndarray] = field(default_factory=list)
    elevations: list[float] = field(default_factory=list)
    azimuths: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    up_disagreement_deg: list[float] = field(default_factory=list)

    def as_json(self) -> dict:
        def span(values: list[float]) -> dict | None:
            return {"min": min(values), "max": max(values), "mean": float(np.mean(values))} if values else None

        return {
            "samples": sum(self.samples.values()),
            "samples_per_split": self.samples,
            "errors": self.errors,
            "warnings": self.warnings,
            "views_per_sample": dict(self.views),
            "image_sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.items()},
            "camera_distance": span(self.distances),
            "normalized_camera_distance": span(self.normalized_distances),
            "normalized_centre_offset": span(self.normalized_centre_offsets),
            "optical_axis_residual": span(self.residuals),
            "up": np.mean(self.ups, axis=0).tolist() if self.ups else None,
            "elevation_deg": span(self.elevations),
            "azimuth_deg": span(self.azimuths),
            "mask_coverage": span(self.coverage),
        }


def _check_sample(sample: Path, report: Report, normalization: NormalizationConfig, mask_threshold: float) -> None:
    frames = read_cameras(sample / CAMERAS_FILE)
    report.views[len(frames)] += 1
    report.samples_by_views.setdefault(len(frames), []).append(str(sample))
    c2w = np.stack([frame.c2w for frame in frames])
    centre, residual = optical_axes_center(c2w)
    up = np.asarray(normalization.up, dtype=np.float64) if normalization.up is not None else estimate_up(c2w)
    up /= np.linalg.norm(up)
    mean_camera_up = -c2w[:, :3, 1].mean(0)
    cosine = np.dot(estimate_up(c2w), mean_camera_up) / np.linalg.norm(mean_camera_up)
    report.up_disagreement_deg.append(float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))))
    offsets = c2w[:, :3, 3] - centre
    distances = np.linalg.norm(offsets, axis=-1)
    report.distances += distances.tolist()
    report.residuals.append(residual)
    report.ups.append(up)
    heights = offsets @ up
    report.elevations += np.degrees(np.arcsin(np.clip(heights / distances, -1, 1))).tolist()
    horizontal = offsets - heights[:, None] * up
    reference = horizontal[0] / max(np.linalg.norm(horizontal[0]), 1e-12)
    side = np.cross(up, reference)
    report.azimuths += np.degrees(np.arctan2(horizontal @ side, horizontal @ reference) % (2 * math.pi)).tolist()
    transform = fit_rig_transform(c2w, normalization)
    normalized, _ = transform.apply(c2w, np.stack([f.fxfycxcy for f in frames]))
    report.normalized_distances += np.linalg.norm(normalized[:, :3, 3], axis=-1).tolist()
    report.normalized_centre_offsets.append(float(np.linalg.norm(transform.apply_points(centre[None])[0])))
    background = np.ones(3, dtype=np.float32)
    for index, frame in enumerate(frames):
        rgba = load_rgba(sample / frame.file_path, background, mask_threshold)
        if rgba.shape[:2] != (frame.height, frame.width):
            raise DataFormatError(
                f"{sample / CAMERAS_FILE}: frames[{index}].w/h: {frame.width}x{frame.height} but the image "
                f"{sample / frame.file_path} is {rgba.shape[1]}x{rgba.shape[0]}"
            )
        report.sizes[(frame.width, frame.height)] += 1
        report.coverage.append(float(rgba[..., 3].mean() * 100.0))


def _advise(report: Report, normalization: NormalizationConfig) -> None:
    if report.distances:
        low, high = min(report.distances), max(report.distances)
        if high - low > 0.1 or abs(np.mean(report.distances) - 2.7) > 0.05:
            state = "enabled (data.normalization.enabled=true)" if normalization.enabled else "DISABLED: enable it"
            report.warnings.append(
                f"camera distances {low:.2f}-{high:.2f} (FaceLift expects 2.7): normalization is {state}; "
                "it rescales the rig to a mean distance of 2.7"
            )
    if report.residuals and max(report.residuals) > 0.1 * float(np.mean(report.distances)):
        report.warnings.append(
            f"optical axes miss a common centre by up to {max(report.residuals):.3f} (RMS): cameras may not look at "
            "the animal, or w2c may be c2w (check the convention: w2c on disk, OpenCV axes)"
        )
    if normalization.up is None and report.up_disagreement_deg and max(report.up_disagreement_deg) > 15.0:
        report.warnings.append(
            f"the camera-centre plane's normal and the cameras' mean up differ by up to "
            f"{max(report.up_disagreement_deg):.0f} deg: the fitted up axis is unreliable for this rig "
            "(uneven elevations); give it explicitly: data.normalization.up=[x,y,z] (check --up X Y Z)"
        )
    if len(report.sizes) > 1:
        report.warnings.append(f"mixed image sizes {sorted(report.sizes)}: intrinsics are rescaled per image")
    if any(w != h for w, h in report.sizes):
        report.warnings.append("non-square images: they are centre-cropped (data.square=crop) or padded (pad)")
    if len(report.views) > 1:
        usual = report.views.most_common(1)[0][0]
        odd = {count: folders for count, folders in report.samples_by_views.items() if count != usual}
        named = "; ".join(
            f"{count} views: {', '.join(folders[:5])}{' ...' if len(folders) > 5 else ''}"
            for count, folders in odd.items()
        )
        report.errors.append(
            f"samples have different view counts {dict(report.views)} (most have {usual}; {named}): "
            "fix or drop those samples, or set data.view_order"
        )
    if report.coverage:
        if min(report.coverage) < 1.0:
            report.warnings.append(
                f"some views have {min(report.coverage):.2f}% foreground: the animal may be out of frame, or the "
                "background is not white (auto-mask threshold data.mask_threshold)"
            )
        if max(report.coverage) > 80.0:
            report.warnings.append(
                f"some views are {max(report.coverage):.0f}% foreground: is the background white? "
                "(RGB images are masked where every channel > mask_threshold)"
            )
    if report.elevations and max(report.elevations) - min(report.elevations) < 1.0:
        report.warnings.append(
            "all cameras at one elevation: fine for a ring rig, but the up axis is then exact only if the ring is level"
        )


def check_dataset(
    root: Path,
    normalization: NormalizationConfig | None = None,
    mask_threshold: float = 250.0,
    max_samples: int | None = None,
) -> Report:
    normalization = normalization or NormalizationConfig()
    report = Report()
    splits = [s for s in ("train", "val", "test") if (root / f"{s}.txt").is_file()]
    if not splits:
        report.errors.append(f"{root}: no split files (train.txt / val.txt) found")
    for split in splits:
        try:
            samples = read_split(root, root / f"{split}.txt")
        except DataFormatError as error:
            report.errors.append(str(error))
            continue
        report.samples[split] = len(samples)
        for sample in samples[:max_samples]:
            try:
                _check_sample(sample, report, normalization, mask_threshold)
            except (DataFormatError, ValueError) as error:
                report.errors.append(f"{error}")
    _advise(report, normalization)
    return report


def print_report(report: Report) -> None:
    summary = report.as_json()
    print(f"samples: {summary['samples_per_split']} (total {summary['samples']})")
    print(f"views per sample: {summary['views_per_sample']}   image sizes: {summary['image_sizes']}")
    for key, label in [
        ("camera_distance", "camera distance to scene centre (raw)"),
        ("normalized_camera_distance", "camera distance after normalization"),
        ("normalized_centre_offset", "scene centre after normalization (|c|)"),
        ("optical_axis_residual", "optical-axis residual (RMS, raw)"),
        ("elevation_deg", "elevation [deg]"),
        ("azimuth_deg", "azimuth [deg] (from camera 0)"),
        ("mask_coverage", "foreground coverage [%]"),
    ]:
        span = summary[key]
        if span:
            print(f"{label:42s} min {span['min']:8.3f}  max {span['max']:8.3f}  mean {span['mean']:8.3f}")
    if summary["up"]:
        print(f"up vector (raw frame): {np.round(summary['up'], 4).tolist()}")
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    for error in report.errors:
        print(f"ERROR: {error}")
    print("OK" if not report.errors else f"{len(report.errors)} error(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gslrm.data check", description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    parser.add_argument("--up", type=float, nargs=3, default=None, help="world up in the raw frame (default: fit)")
    parser.add_argument("--mask-threshold", type=float, default=250.0)
    parser.add_argument("--max-samples", type=int, default=None, help="per split")
    args = parser.parse_args(argv)
    report = check_dataset(args.root, NormalizationConfig(up=args.up), args.mask_threshold, args.max_samples)
    if args.json:
        print(json.dumps(report.as_json(), indent=1))
    else:
        print_report(report)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
