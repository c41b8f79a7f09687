"""The patient as a whole: per-slice summary, 3D view, area profile, CSV and a one-page HTML report.

Pure functions: masks (``HxW bool``, in slice order) and numbers in; summaries, figures and bytes out.
``current`` is always the position (0-based) of the slice shown in the app's four panels.
"""
from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from skimage.measure import marching_cubes

from brainseg import metrics
from brainseg.figures.charts import PREDICTED_COLOUR, TRUE_COLOUR
from brainseg.io.slices import encode_png
from brainseg.measure import Measurements

# Display only: the dataset gives no voxel spacing; LGG FLAIR slices are several times thicker than a
# 256-pixel in-plane step, so the 3D view stretches the slice axis by this factor to look like a head.
SLICE_SPACING = 4.0
CSV_COLUMNS = ("patient", "slice", "predicted_tumour", "predicted_px", "true_tumour", "true_px", "dice")
# Filled on the CSV's "volume" row only: the predicted tumour measured (brainseg.measure); volumes blank when the
# spacing is unknown, extents then in voxels.
VOLUME_COLUMNS = ("predicted_volume_ml", "true_volume_ml", "extent_lr", "extent_ap", "extent_si", "extent_unit",
                  "hemisphere", "largest_slice", "spacing_mm")
DISCLAIMER = "Research demo, not a medical device: not for diagnosis or treatment decisions."


@dataclass(frozen=True)
class PatientSummary:
    """Per-slice areas of one patient and its per-volume Dice (all slices stacked)."""

    patient: str
    slice_numbers: list[int]
    predicted_px: list[int]
    true_px: list[int]
    slice_dice: list[float]      # per slice; both empty = 1, one empty = 0
    volume_dice: float
    has_truth: bool = True       # False for an upload without a mask: true areas and Dice are left blank
    measurements: Measurements | None = None        # the predicted tumour's volume, extent, side and largest slice
    true_measurements: Measurements | None = None   # the true tumour's, with a mask

    @property
    def predicted_tumour(self) -> list[bool]:
        return [area > 0 for area in self.predicted_px]

    @property
    def predicted_slices(self) -> list[int]:
        """Numbers of the slices with a predicted tumour."""
        return [n for n, area in zip(self.slice_numbers, self.predicted_px) if area > 0]

    def rows(self) -> list[dict]:
        """One dict per slice, for tables and the CSV (true columns blank without a mask)."""
        return [dict(zip(CSV_COLUMNS, (self.patient, number, area > 0, area) + self.truth_cells(truth > 0, truth,
                                                                                              dice)))
                for number, area, truth, dice in zip(self.slice_numbers, self.predicted_px, self.true_px,
                                                     self.slice_dice)]

    def truth_cells(self, tumour: bool, area: int, dice: float) -> tuple:
        """The true-tumour, true-area and Dice cells of a row (blank without a mask).

        Args:
            tumour: whether the truth has tumour.
            area: the true tumour area in pixels.
            dice: the Dice of the row (rounded to 4 places).

        Returns:
            ``(tumour, area, dice)``, or three empty strings when ``has_truth`` is False.
        """
        return (tumour, area, round(dice, 4)) if self.has_truth else ("", "", "")

    @property
    def true_volume_ml(self) -> float | None:
        """The true tumour's volume in mL; None without a mask or a known spacing."""
        return self.true_measurements.volume_ml if self.has_truth and self.true_measurements else None

    def volume_cells(self) -> dict[str, object]:
        """The ``VOLUME_COLUMNS`` of the CSV's volume row (all blank without measurements)."""
        found = self.measurements
        if found is None:
            return dict.fromkeys(VOLUME_COLUMNS, "")
        extent = found.extent_mm or found.extent_voxels
        return dict(zip(VOLUME_COLUMNS, (
            "" if found.volume_ml is None else round(found.volume_ml, 3),
            "" if self.true_volume_ml is None else round(self.true_volume_ml, 3),
            *(round(float(extent[axis]), 2) if found.spacing else int(extent[axis]) for axis in (2, 1, 0)),
            "mm" if found.spacing else "voxels",
            found.hemisphere, "" if found.largest_slice is None else found.largest_slice, spacing_text(found.spacing))))


def spacing_text(spacing: Sequence[float] | None) -> str:
    """``"3.00 x 0.94 x 0.94"`` (mm between slices, rows and columns), or ``"unknown"``."""
    return "unknown" if spacing is None else " x ".join(f"{s:.2f}" for s in spacing)


def patient_summary(patient: str, slice_numbers: Sequence[int], predicted: Sequence[np.ndarray],
                    truths: Sequence[np.ndarray], has_truth: bool = True, measurements: Measurements | None = None,
                    true_measurements: Measurements | None = None) -> PatientSummary:
    """Summarise one patient's predicted and true masks: per-slice areas and Dice, and the per-volume Dice.

    Args:
        patient: the patient's (or upload's) name.
        slice_numbers: the slices' numbers, in slice order.
        predicted: the predicted ``HxW bool`` mask of each slice, in slice order.
        truths: the true ``HxW bool`` mask of each slice, in slice order.
        has_truth: False when the truths are placeholders (an upload without a mask).
        measurements: the predicted tumour measured (:func:`brainseg.measure.measure`), for the CSV and the report.
        true_measurements: the true tumour measured, with a mask.

    Returns:
        The patient's summary.
    """
    if not len(predicted) == len(truths) == len(slice_numbers):
        raise ValueError(f"{patient}: {len(slice_numbers)} slice numbers, {len(predicted)} predicted and "
                         f"{len(truths)} true masks; expected one of each per slice")
    per_slice = [metrics.counts(p, t) for p, t in zip(predicted, truths)]
    total = sum(per_slice, metrics.Counts(0, 0, 0))
    return PatientSummary(patient, [int(n) for n in slice_numbers], [int(p.sum()) for p in predicted],
                          [int(t.sum()) for t in truths], [metrics.dice(c) for c in per_slice], metrics.dice(total),
                          has_truth, measurements, true_measurements)


def summary_csv(summary: PatientSummary) -> bytes:
    """CSV bytes: one row per slice, then a row ``slice = volume`` with the summed areas, per-volume Dice and the
    ``VOLUME_COLUMNS`` measurements."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS + VOLUME_COLUMNS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(summary.rows())
    truth = summary.truth_cells(any(summary.true_px), sum(summary.true_px), summary.volume_dice)
    writer.writerow(dict(zip(CSV_COLUMNS, (summary.patient, "volume", any(summary.predicted_tumour),
                                           sum(summary.predicted_px)) + truth)) | summary.volume_cells())
    return buffer.getvalue().encode()


def key_slices(summary: PatientSummary, count: int = 3) -> list[int]:
    """Positions of the slices most worth showing: largest predicted, then largest true, tumour areas."""
    by_predicted = sorted(range(len(summary.predicted_px)), key=lambda i: -summary.predicted_px[i])
    by_truth = sorted(range(len(summary.true_px)), key=lambda i: -summary.true_px[i])
    chosen: list[int] = []
    for index in [i for pair in zip(by_predicted, by_truth) for i in pair]:
        if index not in chosen and (summary.predicted_px[index] or summary.true_px[index]):
            chosen.append(index)
    return sorted(chosen[:count])


# ---- figures ----------------------------------------------------------------------------------------

def stack(masks: Sequence[np.ndarray]) -> np.ndarray:
    """``DxHxW bool`` volume of ``HxW`` masks in slice order."""
    return np.stack([np.asarray(m, bool) for m in masks])


def _surface(volume: np.ndarray, name: str, colour: str, opacity: float, step: int) -> go.Mesh3d:
    """Marching-cubes surface of a ``DxHxW bool`` volume; padded so every surface is closed."""
    padded = np.pad(volume, 1).astype(np.float32)
    vertices, faces, _, _ = marching_cubes(padded, level=0.5, step_size=step, allow_degenerate=False)
    z, y, x = (vertices - 1).T
    return go.Mesh3d(x=x, y=y, z=z * SLICE_SPACING, i=faces[:, 0], j=faces[:, 1], k=faces[:, 2], name=name,
                     color=colour, opacity=opacity, showlegend=True, flatshading=False, hoverinfo="name")


def _slice_marker(shape: tuple[int, int, int], current: int, number: int) -> go.Scatter3d:
    depth, height, width = shape
    z = current * SLICE_SPACING
    return go.Scatter3d(x=[0, width - 1, width - 1, 0, 0], y=[0, 0, height - 1, height - 1, 0], z=[z] * 5,
                        mode="lines", line={"color": "#1f77b4", "width": 6}, name=f"shown slice {number}",
                        hoverinfo="name")


def volume_figure(predicted: Sequence[np.ndarray], truths: Sequence[np.ndarray] | None, current: int,
                  slice_numbers: Sequence[int] | None = None, step: int = 2) -> go.Figure:
    """Rotatable 3D view: predicted (red, translucent) and true (green) tumour surfaces and the shown slice.

    ``layout.meta`` holds the voxel counts the surfaces were built from (``predicted_voxels`` equals the
    sum of the per-slice predicted areas; ``true_voxels`` is None without a mask). ``step`` > 1 coarsens the
    surfaces for speed.

    Args:
        predicted: the predicted ``HxW bool`` mask of each slice, in slice order.
        truths: the true ``HxW bool`` mask of each slice, in slice order; None without a mask (nothing "true" is
            drawn or named).
        current: position (0-based) of the shown slice, marked in the view.
        slice_numbers: the slices' numbers for the axis and marker; ``None``: 1, 2, ...
        step: marching-cubes step size in voxels.

    Returns:
        The plotly figure.
    """
    predicted_volume = stack(predicted)
    numbers = list(slice_numbers) if slice_numbers is not None else list(range(1, len(predicted) + 1))
    true_volume = None if truths is None else stack(truths)
    predicted_voxels, true_voxels = int(predicted_volume.sum()), None if true_volume is None else int(true_volume.sum())
    figure = go.Figure()
    if true_volume is not None and true_voxels:
        figure.add_trace(_surface(true_volume, f"true tumour ({true_voxels:,} voxels)", TRUE_COLOUR, 0.7, step))
    if predicted_voxels:
        figure.add_trace(_surface(predicted_volume, f"predicted tumour ({predicted_voxels:,} voxels)",
                                  PREDICTED_COLOUR, 0.35, step))
    figure.add_trace(_slice_marker(predicted_volume.shape, current, numbers[current]))
    depth, height, width = predicted_volume.shape
    figure.update_layout(
        meta={"predicted_voxels": predicted_voxels, "true_voxels": true_voxels, "current": current},
        scene={"xaxis": {"range": [0, width], "title": "x (px)"},
               "yaxis": {"range": [height, 0], "title": "y (px)"},
               "zaxis": {"range": [0, max(depth - 1, 1) * SLICE_SPACING], "title": "slice",
                         "tickvals": [i * SLICE_SPACING for i in range(depth)][::5], "ticktext": numbers[::5]},
               "aspectmode": "manual",
               "aspectratio": {"x": 1, "y": height / width, "z": max(depth * SLICE_SPACING / width, 0.2)}},
        height=520, margin={"l": 0, "r": 0, "t": 40, "b": 0}, legend={"orientation": "h", "y": -0.02},
        title={"text": f"patient in 3D: predicted{'' if truths is None else ' vs true'} tumour", "font": {"size": 14}},
    )
    return figure


# ---- one-page report ----------------------------------------------------------------------------------

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}"
          ".warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em;border-radius:4px}"
          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
          ".slices{display:flex;gap:12px;flex-wrap:wrap}figure{margin:0}img{width:256px;image-rendering:pixelated}")


def _png_tag(image: np.ndarray, alt: str) -> str:
    encoded = base64.b64encode(encode_png(image)).decode()
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _table(rows: Sequence[dict]) -> str:
    if not rows:
        return "<p>no slices</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _measurement_facts(found: Measurements | None) -> dict[str, str]:
    """The report's lines on the predicted tumour's size and place (none without measurements)."""
    if found is None:
        return {}
    largest = "none" if found.largest_slice is None else f"{found.largest_slice} ({found.largest_px:,} px)"
    return {
        "voxel spacing (mm: slice x row x column)": spacing_text(found.spacing) if found.spacing else
        "unknown (sizes in voxels)",
        "predicted tumour volume": found.volume_text() + ("" if found.spacing else " (spacing unknown)"),
        "predicted tumour extent (L-R x A-P x S-I)": found.extent_text(),
        "hemisphere of the predicted tumour": found.hemisphere,
        "slice of largest predicted area": largest,
    }


def html_report(summary: PatientSummary, key_images: Mapping[int, np.ndarray], figures: Sequence[go.Figure] = (),
                settings: Mapping[str, float] | None = None, plotly_js: bool | str = True) -> str:
    """One self-contained HTML page: the numbers, key slices, the figures (interactive) and the per-slice table.

    Args:
        summary: the patient's summary.
        key_images: the key slices as ``{position: HxWx3 uint8 overlay}``.
        figures: plotly figures to embed.
        settings: the pipeline settings; the numeric ones are listed as ``setting: <name>``.
        plotly_js: how the first figure includes plotly.js (``include_plotlyjs``); ``"cdn"`` makes the file small
            but online-only.

    Returns:
        The HTML page.
    """
    predicted_list = ", ".join(map(str, summary.predicted_slices)) or "none"
    truth = {
        "slices with true tumour": sum(area > 0 for area in summary.true_px),
        "true tumour (voxels)": sum(summary.true_px),
        **({"true tumour volume": f"{summary.true_volume_ml:.1f} mL"} if summary.true_volume_ml is not None else {}),
        "per-volume Dice (all slices stacked)": f"{summary.volume_dice:.4f}",
    } if summary.has_truth else {"true mask": "none uploaded (no Dice)"}
    facts = {
        "patient": summary.patient,
        "slices": len(summary.slice_numbers),
        "slices with predicted tumour": f"{len(summary.predicted_slices)} ({predicted_list})",
        "predicted tumour (voxels)": sum(summary.predicted_px),
        **_measurement_facts(summary.measurements),
        **truth,
        **({f"setting: {k}": v for k, v in settings.items() if isinstance(v, (int, float))} if settings else {}),
    }
    facts_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    slices_html = "".join(
        f"<figure>{_png_tag(image, f'slice {summary.slice_numbers[i]}')}<figcaption>slice {summary.slice_numbers[i]}: "
        f"predicted {summary.predicted_px[i]} px{f', true {summary.true_px[i]} px' * summary.has_truth}</figcaption>"
        "</figure>"
        for i, image in sorted(key_images.items()))
    figures_html = "".join(f.to_html(full_html=False, include_plotlyjs=plotly_js if n == 0 else False)
                           for n, f in enumerate(figures))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>brainseg report: {html.escape(summary.patient)}"
            f"</title><style>{_STYLE}</style></head><body><h1>brainseg report: {html.escape(summary.patient)}</h1>"
            f"<p class='warn'>{html.escape(DISCLAIMER)}</p><h2>Summary</h2><table>{facts_html}</table>"
            f"<h2>Key slices</h2><div class='slices'>{slices_html}</div><h2>Figures</h2>{figures_html}"
            f"<h2>Per slice</h2>{_table(summary.rows())}</body></html>")
