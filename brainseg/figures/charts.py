"""Pictures and charts: the four-panel view, overlays and the plotly figures (pure: arrays/dicts in, figures out).

Every figure names its split and its aggregation in its title, so a screenshot cannot be misread.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont
from plotly.subplots import make_subplots

FLAIR_CHANNEL = 1   # Kaggle LGG slices stack pre-contrast, FLAIR and post-contrast as R, G, B
VIEWS = {"flair": "FLAIR channel", "composite": "3-channel composite"}
OVERLAY_ALPHA = 0.55

# Overlay colours (RGB), chosen to stay apart for red-green colour blindness too.
OVERLAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "true positive": (46, 204, 113),
    "false positive": (255, 176, 0),
    "false negative": (0, 153, 255),
    "predicted": (255, 75, 110),
}

TRUE_COLOUR, PREDICTED_COLOUR = "#0099ff", "#ff4b6e"

# Heat-map ramp (black -> purple -> red -> orange -> pale yellow, close to matplotlib's "magma").
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")   # one colour per line
HEAT_RAMP = np.array([(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)], np.float32)


@dataclass(frozen=True)
class Panel:
    """One image of the four-panel view."""

    title: str
    image_u8: np.ndarray   # HxWx3 uint8


def display_image(image_u8: np.ndarray, view: str = "composite") -> np.ndarray:
    """``HxWx3 uint8`` as shown: the 3-channel composite or the FLAIR channel in grey."""
    if view == "flair":
        return np.repeat(image_u8[..., FLAIR_CHANNEL:FLAIR_CHANNEL + 1], 3, axis=2)
    if view != "composite":
        raise ValueError(f"view {view!r}: expected one of {', '.join(VIEWS)}")
    return image_u8


def mask_image(mask: np.ndarray, colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """``HxW bool`` -> ``HxWx3 uint8``: the mask in ``colour`` on black."""
    image = np.zeros((*mask.shape, 3), np.uint8)
    image[mask] = colour
    return image


def placeholder(shape: tuple[int, int], text: str) -> np.ndarray:
    """A dark ``HxWx3`` tile with ``text`` centred (e.g. "no ground truth")."""
    height, width = shape
    tile = Image.new("RGB", (width, height), (38, 39, 48))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=max(10, width // 14))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(
        ((width - (right - left)) / 2, (height - (bottom - top)) / 2 - top), text, fill=(170, 172, 185), font=font
    )
    return np.asarray(tile)


def overlay(image_u8: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """The prediction blended over the image; with ``truth``, TP/FP/FN in their colours.

    Args:
        image_u8: ``HxWx3 uint8`` slice, as shown.
        predicted: ``HxW bool`` predicted mask.
        truth: ``HxW bool`` true mask, or ``None`` without one.

    Returns:
        ``HxWx3 uint8`` overlay.
    """
    if truth is None:
        regions = {"predicted": predicted}
    else:
        regions = {
            "true positive": predicted & truth,
            "false positive": predicted & ~truth,
            "false negative": ~predicted & truth,
        }
    blended = image_u8.astype(np.float32)
    for name, region in regions.items():
        blended[region] = (1 - OVERLAY_ALPHA) * blended[region] + OVERLAY_ALPHA * np.array(OVERLAY_COLOURS[name])
    return np.round(blended).astype(np.uint8)


def heat_image(values: np.ndarray, high: float = 1.0) -> np.ndarray:
    """``HxW float`` in ``0..high`` -> ``HxWx3 uint8`` on a black-to-yellow ramp (values outside are clipped)."""
    position = np.clip(values / high, 0.0, 1.0) * (len(HEAT_RAMP) - 1)
    stops = np.arange(len(HEAT_RAMP))
    channels = [np.interp(position, stops, HEAT_RAMP[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=-1)).astype(np.uint8)


def legend(has_truth: bool) -> dict[str, str]:
    """``{label: hex colour}`` of the overlay's regions."""
    names = ("true positive", "false positive", "false negative") if has_truth else ("predicted",)
    return {name: "#{:02x}{:02x}{:02x}".format(*OVERLAY_COLOURS[name]) for name in names}


def legend_html(has_truth: bool) -> str:
    """The overlay legend as small coloured chips (for ``st.markdown(..., unsafe_allow_html=True)``)."""
    chips = (
        f'<span style="display:inline-block;width:0.8em;height:0.8em;border-radius:2px;background:{colour};'
        f'margin:0 0.3em 0 0.8em;vertical-align:middle"></span>{name}'
        for name, colour in legend(has_truth).items()
    )
    return f'<div style="font-size:0.85rem">{"".join(chips)}</div>'


def four_panels(
    image_u8: np.ndarray, truth: np.ndarray | None, predicted: np.ndarray, view: str = "flair"
) -> list[Panel]:
    """Image, true mask (or "no ground truth"), predicted mask and overlay, all ``HxWx3 uint8``.

    Args:
        image_u8: ``HxWx3 uint8`` slice.
        truth: ``HxW bool`` true mask, or ``None`` without one.
        predicted: ``HxW bool`` predicted mask.
        view: how the slice is shown: ``"flair"`` (grey) or ``"composite"`` (:func:`display_image`).

    Returns:
        The four panels, each with its title.
    """
    shown = display_image(image_u8, view)
    truth_panel = (
        mask_image(truth, OVERLAY_COLOURS["false negative"])
        if truth is not None
        else placeholder(predicted.shape, "no ground truth")
    )
    return [
        Panel(f"MRI slice ({VIEWS[view]})", shown),
        Panel("True mask" if truth is not None else "True mask: none uploaded", truth_panel),
        Panel("Predicted mask", mask_image(predicted, OVERLAY_COLOURS["predicted"])),
        Panel("Overlay", overlay(shown, predicted, truth)),
    ]


# ---- plotly figures -------------------------------------------------------------------------------


def _layout(figure: go.Figure, title: str, scope: str, height: int = 360) -> go.Figure:
    """Title on two lines (what, then split and aggregation), legend under the plot."""
    figure.update_layout(
        title={"text": f"{title}<br><span style='font-size:11px'>{scope}</span>", "font": {"size": 14}},
        height=height,
        margin={"l": 10, "r": 10, "t": 64, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
    )
    return figure


def training_curves(history: dict) -> go.Figure:
    """Loss per epoch (train and validation) beside the validation metrics, from a ``history_*.json``."""
    epochs = history["epochs"]
    x = [e["epoch"] for e in epochs]
    metric_names = {
        "val_tversky": "val Tversky (pooled, tumour slices)",
        "volume_dice": "val Dice (per volume)",
        "val_metric": f"val {history.get('metric', 'metric')}",
        "auc": "val ROC AUC (per slice)",
    }
    if history.get("kind") == "segmenter":
        metric_names.pop("val_metric")  # the same number as val_tversky
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation metrics"), horizontal_spacing=0.12)
    for key, name in (("train_loss", "train loss"), ("val_loss", "val loss")):
        figure.add_scatter(
            x=x,
            y=[e.get(key) for e in epochs],
            name=name,
            mode="lines+markers",
            line={"dash": "dot" if key == "val_loss" else "solid"},
            row=1,
            col=1,
        )
    for key, name in metric_names.items():
        if any(key in e for e in epochs):
            figure.add_scatter(x=x, y=[e.get(key) for e in epochs], name=name, mode="lines+markers", row=1, col=2)
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(range=[0, 1.02], row=1, col=2)
    for stage in history.get("stages", [])[1:]:  # where a run resumed with a new schedule or was fine-tuned
        figure.add_vline(
            x=stage["first_epoch"] - 0.5,
            line={"dash": "dash", "color": "grey", "width": 1},
            annotation_text=stage["name"],
            annotation_position="top left",
            annotation_font_size=10,
        )
    kind = history.get("kind", "model")
    _layout(
        figure,
        f"{kind.capitalize()} training, per epoch",
        "loss: mean over train-patient batches · metrics: val patients",
        height=420,
    )
    figure.update_layout(margin={"t": 100})
    return figure


def member_curves(histories: dict[str, dict]) -> go.Figure:
    """The ensemble members' training, one line each: train loss per epoch beside the per-volume Dice on the
    member's own held-out patients (epochs it validated), from their ``foldK_history.json``."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("train loss", "held-out Dice (per volume)"), horizontal_spacing=0.12
    )
    for index, (name, history) in enumerate(histories.items()):
        epochs = history["epochs"]
        colour = PALETTE[index % len(PALETTE)]
        figure.add_scatter(
            x=[e["epoch"] for e in epochs],
            y=[e.get("train_loss") for e in epochs],
            name=name,
            mode="lines",
            line={"color": colour},
            legendgroup=name,
            row=1,
            col=1,
        )
        validated = [e for e in epochs if "volume_dice" in e]
        figure.add_scatter(
            x=[e["epoch"] for e in validated],
            y=[e["volume_dice"] for e in validated],
            name=name,
            mode="lines+markers",
            line={"color": colour},
            legendgroup=name,
            showlegend=False,
            row=1,
            col=2,
        )
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(range=[0, 1.02], row=1, col=2)
    _layout(
        figure,
        f"Segmenter: the {len(histories)} cross-validation members, per epoch",
        "loss: mean over the member's training batches · Dice: its own held-out patients (bf16, no gate)",
        height=420,
    )
    figure.update_layout(margin={"t": 100})
    return figure


def out_of_fold_line(crossval: dict) -> str:
    """One sentence of the cross-validation estimate with its intervals, for the page's header."""
    oof = crossval["out_of_fold"]
    dice, tversky = oof["volume_dice_mean_interval_95"], oof["tumour_slices_tversky_pooled_interval_95"]
    return (
        f"Out of fold over the {oof['patients']} development patients ({crossval['folds_evaluated']} "
        f"cross-validation members, each patient predicted by the one that never saw it, segmenter alone): "
        f"per-volume Dice {oof['volume_dice_mean']:.3f} (95% {dice[0]:.2f}-{dice[1]:.2f}), pooled tumour-slice "
        f"Tversky {oof['tumour_slices_tversky_pooled']:.3f} (95% {tversky[0]:.2f}-{tversky[1]:.2f})."
    )


def split_label(metrics: dict) -> str:
    patients = metrics["patients"]
    return f"{metrics.get('split', '?')} split, {patients} patient{'s' * (patients != 1)}, {metrics['slices']} slices"


def dice_distribution(metrics: dict) -> go.Figure:
    """Per-volume Dice of every patient (pipeline and segmenter alone) from an evaluation report."""
    figure = go.Figure()
    for part, name in (("pipeline", "pipeline (gate + segmenter)"), ("segmenter", "segmenter alone")):
        per_patient = metrics[part]["volume"]["per_patient"]
        figure.add_box(
            y=list(per_patient.values()),
            text=list(per_patient),
            name=name,
            boxpoints="all",
            jitter=0.4,
            pointpos=0,
            hovertemplate="%{text}<br>Dice %{y:.3f}<extra></extra>",
        )
    figure.update_layout(yaxis_title="Dice (one point per patient)", yaxis_range=[0, 1.02], showlegend=False)
    return _layout(figure, "Per-volume Dice, one point per patient", split_label(metrics))


def confusion_matrix(metrics: dict, part: str = "pipeline") -> go.Figure:
    """Per-slice tumour / no-tumour decisions of the pipeline (or ``part="classifier"``) as a 2x2 heatmap."""
    d = metrics[part]["detection"]
    cells = [[d["tn"], d["fp"]], [d["fn"], d["tp"]]]
    figure = go.Figure(
        go.Heatmap(
            z=cells,
            x=["predicted: no tumour", "predicted: tumour"],
            y=["true: no tumour", "true: tumour"],
            text=cells,
            texttemplate="%{text}",
            colorscale="Reds",
            showscale=False,
            hovertemplate="%{y}, %{x}: %{z} slices<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")
    who = "pipeline" if part == "pipeline" else "classifier alone"
    return _layout(figure, f"Tumour detection per slice ({who}), accuracy {d['accuracy']:.3f}", split_label(metrics))


def roc_figure(metrics: dict) -> go.Figure:
    """The classifier's per-slice ROC curve, with its AUC and the gate's operating point."""
    roc, auc = metrics["classifier"]["roc"], metrics["classifier"]["roc_auc"]
    d = metrics["classifier"]["detection"]
    figure = go.Figure()
    figure.add_scatter(
        x=roc["fpr"],
        y=roc["tpr"],
        mode="lines",
        name=f"classifier (AUC {auc:.3f})",
        line={"color": PREDICTED_COLOUR},
        fill="tozeroy",
        customdata=roc["threshold"],
        hovertemplate="FPR %{x:.3f}, TPR %{y:.3f}<br>threshold %{customdata}<extra></extra>",
    )
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dash", "color": "grey"})
    figure.add_scatter(
        x=[d["false_positive_rate"]],
        y=[d["sensitivity"]],
        mode="markers",
        name="gate",
        marker={"size": 11, "color": TRUE_COLOUR, "symbol": "diamond"},
    )
    figure.update_layout(
        xaxis_title="false-positive rate", yaxis_title="sensitivity", xaxis_range=[0, 1], yaxis_range=[0, 1.02]
    )
    return _layout(figure, f"Classifier ROC, AUC {auc:.3f}", f"per slice · {split_label(metrics)}")


def area_across_slices(rows: Sequence[tuple[int, int, int]], current_slice: int, title: str, scope: str,
                       has_truth: bool = True) -> go.Figure:
    """True vs predicted tumour area (pixels) across a volume's slices, current slice marked (the HTML report's
    interactive copy of :func:`area_profile`).

    Args:
        rows: ``(slice, true_px, predicted_px)`` per slice, in slice order.
        current_slice: the number of the slice to mark.
        title: the figure's title.
        scope: the line under the title (split and aggregation).
        has_truth: whether there is a true mask; without one no "true area" series is drawn.

    Returns:
        The plotly figure.
    """
    numbers = [r[0] for r in rows]
    figure = go.Figure()
    if has_truth:
        figure.add_scatter(x=numbers, y=[r[1] for r in rows], name="true area", mode="lines+markers",
                           line={"color": TRUE_COLOUR}, fill="tozeroy")
    figure.add_scatter(
        x=numbers, y=[r[2] for r in rows], name="predicted area", mode="lines+markers", line={"color": PREDICTED_COLOUR}
    )
    figure.add_vline(
        x=current_slice,
        line={"color": "white", "dash": "dot"},
        annotation_text=f"slice {current_slice}",
        annotation_position="top",
    )
    figure.update_layout(xaxis_title="slice", yaxis_title="tumour area (pixels)")
    return _layout(figure, title, scope, height=320)


def area_profile(rows: Sequence[tuple[int, int, int]], current_slice: int, title: str, scope: str,
                 has_truth: bool = True) -> dict:
    """The page's area profile as a Vega-Lite spec: predicted (and, with a mask, true) tumour area per slice, the
    current slice marked. Vega-Lite draws in the browser far sooner than plotly, so the page opens faster.

    Args:
        rows: ``(slice, true_px, predicted_px)`` per slice, in slice order.
        current_slice: the number of the slice to mark.
        title: the chart's title.
        scope: the line under the title (split and aggregation).
        has_truth: whether there is a true mask; without one no "true area" series is drawn.

    Returns:
        The Vega-Lite specification (JSON-ready).
    """
    series = [("true area", 1, TRUE_COLOUR)] if has_truth else []
    series.append(("predicted area", 2, PREDICTED_COLOUR))
    values = [{"slice": row[0], "series": name, "pixels": row[column]} for row in rows for name, column, _ in series]
    line = {"mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "slice", "type": "quantitative", "title": "slice"},
                         "y": {"field": "pixels", "type": "quantitative", "title": "tumour area (pixels)"},
                         "color": {"field": "series", "type": "nominal", "legend": {"orient": "top", "title": None},
                                   "scale": {"domain": [s[0] for s in series], "range": [s[2] for s in series]}},
                         "tooltip": [{"field": "slice", "type": "quantitative"}, {"field": "series"},
                                     {"field": "pixels", "type": "quantitative"}]}}
    marker = {"data": {"values": [{"slice": current_slice}]}, "mark": {"type": "rule", "strokeDash": [4, 4]},
              "encoding": {"x": {"field": "slice", "type": "quantitative"}}}
    return {"title": {"text": title, "subtitle": scope, "anchor": "start"}, "height": 300,
            "data": {"values": values}, "layer": [line, marker]}


def headline_intervals(metrics: dict) -> str:
    """The headline overlap figures' 95% bootstrap intervals over patients, in words; empty for older files."""
    volume, pooled = metrics["pipeline"]["volume"], metrics["segmenter"]["tumour_slices"]
    if "dice_mean_interval_95" not in volume or "tversky_pooled_interval_95" not in pooled:
        return ""
    (dice_low, dice_high), (tversky_low, tversky_high) = (
        volume["dice_mean_interval_95"],
        pooled["tversky_pooled_interval_95"],
    )
    return (
        f"95% bootstrap intervals over the {volume['patients']} patients: Dice per volume "
        f"{dice_low:.2f}-{dice_high:.2f}, pooled Tversky {tversky_low:.2f}-{tversky_high:.2f}."
    )


def headline(metrics: dict) -> list[tuple[str, str, str]]:
    """The honest test figures as ``(label, value, explanation)``, each naming its split and aggregation."""
    pipe, seg, cls = metrics["pipeline"], metrics["segmenter"], metrics["classifier"]
    split = split_label(metrics)
    return [
        (
            "Dice per volume",
            f"{pipe['volume']['dice_mean']:.3f}",
            f"Pipeline, mean over patients of the Dice of each patient's stacked slices ({split}); "
            f"median {pipe['volume']['dice_median']:.3f}.",
        ),
        (
            "Tversky, pooled",
            f"{seg['tumour_slices']['tversky_pooled']:.3f}",
            f"Segmenter, pixels pooled over the {seg['tumour_slices']['slices']} tumour slices ({split}): the paper's "
            f"aggregation (paper: 0.9168). Per-slice mean {seg['tumour_slices']['tversky_mean']:.3f}.",
        ),
        (
            "Detection accuracy",
            f"{pipe['detection']['accuracy']:.3f}",
            f"Pipeline, per slice, tumour = non-empty mask ({split}); "
            f"sensitivity {pipe['detection']['sensitivity']:.3f}, "
            f"false-positive rate {pipe['detection']['false_positive_rate']:.3f}.",
        ),
        ("Classifier ROC AUC", f"{cls['roc_auc']:.3f}", f"Classifier alone, per slice ({split})."),
    ]


def jet(values: np.ndarray) -> np.ndarray:
    """``...x3 float32`` jet colours (blue - cyan - yellow - red) of values in 0..1."""
    scaled = 4.0 * np.clip(values, 0.0, 1.0)[..., None]
    return np.clip(1.5 - np.abs(scaled - np.array([3.0, 2.0, 1.0], np.float32)), 0.0, 1.0).astype(np.float32)


def cam_overlay(image_u8: np.ndarray, heat: np.ndarray, image_weight: float = 0.6) -> np.ndarray:
    """The slice with its heat map (jet colours) blended in.

    Args:
        image_u8: ``HxWx3 uint8`` slice, as shown.
        heat: ``HxW`` float heat map in 0..1 (clipped to it).
        image_weight: the slice's weight in the blend, the heat map's is ``1 - image_weight``.

    Returns:
        ``HxWx3 uint8`` blend.
    """
    blended = image_weight * image_u8.astype(np.float32) / 255.0 + (1.0 - image_weight) * jet(heat)
    return np.round(255.0 * blended).astype(np.uint8)
